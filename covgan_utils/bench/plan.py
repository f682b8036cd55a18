"""What one `bench` run measures: a plan for a CPU and one for a GPU, chosen from the device and changed by flags.

A plan names, per Keras backend, the presets to time (one worker process per backend, preset and
precision), the timed calls per step variant, the short real training of the in-training measurement,
the batch sweep and the size of the matmul that gives the device's measured peak.
"""
import dataclasses

from covgan_utils import config as config_lib

BACKENDS = ("tensorflow", "jax")
PRECISIONS = tuple(p for p in config_lib.PRECISIONS if p != "auto")
LIGHT_PARTS = ("extras_off",)  # one step variant (no lazy R1), so a slow precision costs one compile and one warm-up
PEAK_DTYPES = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}  # precision -> matmul dtype


@dataclasses.dataclass
class Plan:
    backends: tuple  # Keras backends, in the order they run
    presets: dict  # backend -> presets timed under it
    precisions: tuple  # Keras dtype policies, each preset under each
    steps: dict  # backend -> timed calls per measurement (after one warm-up call per step variant)
    train_epochs: int  # in-training: epochs of the short real training (the first one compiles and is left out)
    train_images: dict  # backend -> images of that training (0: every training image)
    sweep_backends: tuple  # backends whose project step is timed at every batch of `sweep_batches`
    sweep_preset: str
    sweep_batches: tuple
    sweep_steps: int
    matmul_size: int  # the square matmul of the measured peak
    matmul_repeats: int  # best of this many
    light: dict = dataclasses.field(default_factory=dict)  # backend -> precisions timed on its first preset by the extras-off step alone
    quick_check: bool = False  # a pipeline check: every measurement runs, with too few steps to be a timing

    def jobs(self):
        """[(backend, preset, precision, parts)] of every configuration worker, in run order; parts: None for
        every measurement, or the names of the few a light job takes."""
        out = []
        for b in self.backends:
            out += [(b, p, q, None) for p in self.presets[b] for q in self.precisions]
            out += [(b, self.presets[b][0], q, LIGHT_PARTS) for q in self.light.get(b, ()) if q not in self.precisions]
        return out


def cpu_plan(bf16_units=True):
    """Two-core CPU, about 20 minutes: `quick` and `best` on TensorFlow, `quick` on JAX (about 5x slower on
    CPU, so fewer steps and a training of 2 batches per epoch; the median of 3 epochs after the compiling one), batch sweep on TensorFlow; float32 and
    mixed_bfloat16. A CPU without bfloat16 units (no AVX512-BF16 or AMX: `hardware.fast_precision`) takes
    about 10x longer per bfloat16 step (36 s against 2.8 s for a `quick` extras-off step under TensorFlow on a
    2-core EPYC without them, cores shared), so there mixed_bfloat16 is timed by one extras-off step of
    `quick` on TensorFlow only, for the speed-up table."""
    return Plan(
        backends=("tensorflow", "jax"), presets={"tensorflow": ("quick", "best"), "jax": ("quick",)},
        precisions=("float32", "mixed_bfloat16") if bf16_units else ("float32",), steps={"tensorflow": 10, "jax": 6},
        light={} if bf16_units else {"tensorflow": ("mixed_bfloat16",)},
        train_epochs=4, train_images={"tensorflow": 0, "jax": -2},
        sweep_backends=("tensorflow",), sweep_preset="quick", sweep_batches=(16, 32, 64, 128, 256), sweep_steps=3,
        matmul_size=2048, matmul_repeats=5,
    )


def gpu_plan():
    """One GPU under JAX (the GPU machine has no TensorFlow): `gpu best paper quick`, float32 and mixed_bfloat16,
    more steps, batch sweep of the `gpu` preset up to 256."""
    return Plan(
        backends=("jax",), presets={"jax": ("gpu", "best", "paper", "quick")},
        precisions=("float32", "mixed_bfloat16"), steps={"jax": 50},
        train_epochs=4, train_images={"jax": 0},
        sweep_backends=("jax",), sweep_preset="gpu", sweep_batches=(16, 32, 64, 128, 256), sweep_steps=20,
        matmul_size=8192, matmul_repeats=10,
    )


def default_plan(gpu, bf16_units=True):
    return gpu_plan() if gpu else cpu_plan(bf16_units)


def check_names(presets=None, backends=None, precisions=None):
    """Refuse unknown presets, backends and precisions in one line naming the value and the choices."""
    for flag, values, known in (("--presets", presets, config_lib.PRESETS), ("--backends", backends, BACKENDS), ("--precisions", precisions, PRECISIONS)):
        for value in values or ():
            if value not in known:
                raise ValueError(f"{flag}: unknown value {value!r}; choose from {', '.join(known)}")


def with_flags(plan, presets=None, backends=None, precisions=None, steps=None, sweep_batches=None, quick_check=False):
    """`plan` changed by the command-line flags (None: the plan's own); `quick_check` cuts every count to
    the least that still runs each measurement (1 step, 2 training epochs of 2 batches, batches 16 and 32)."""
    check_names(presets, backends, precisions)
    first = plan.backends[0]
    backends = tuple(backends or plan.backends)
    out = dataclasses.replace(
        plan, backends=backends,
        presets={b: tuple(presets or plan.presets.get(b, plan.presets[first])) for b in backends},
        precisions=tuple(precisions or plan.precisions),
        steps={b: plan.steps.get(b, plan.steps[first]) for b in backends},
        train_images={b: plan.train_images.get(b, plan.train_images[first]) for b in backends},
        sweep_backends=tuple(b for b in plan.sweep_backends if b in backends) or ((backends[0],) if sweep_batches else ()),
        light={} if precisions else {b: q for b, q in plan.light.items() if b in backends},
    )
    if quick_check:
        out = dataclasses.replace(
            out, steps={b: 1 for b in backends}, train_epochs=2, train_images={b: -2 for b in backends},
            sweep_batches=(16, 32), sweep_steps=1, matmul_size=512, matmul_repeats=2, quick_check=True,
        )
    if steps:
        out.steps = {b: steps for b in backends}
    if sweep_batches:
        out.sweep_batches = tuple(sweep_batches)
    return out


def training_count(wanted, batch_size, available):
    """Images of the in-training measurement from a plan's `train_images` value: all `available` (0), at most
    `wanted`, or -k: k batches."""
    if wanted < 0:
        return min(available, -wanted * batch_size)
    return available if wanted == 0 else min(available, wanted)


def to_json(plan):
    return dataclasses.asdict(plan)
