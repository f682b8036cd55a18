"""Training configuration: one dataclass whose every field declares its type and range, named presets, JSON round trip."""
import dataclasses
import json
import os
import pathlib

from covgan_utils.data import dataset, sources
from covgan_utils.nets import archs
from covgan_utils.util import fields, files


MAX_WIDTH = 8192  # channels of any layer
SEED = fields.Int(0, fields.SEED_MAX)
WIDTH = fields.Int(1, MAX_WIDTH)
LOSSES = ("bce", "non-saturating", "hinge", "wgan-gp")
UPSAMPLES = ("transpose", "resize", "bilinear")
METRIC_FEATURES = ("auto", "inception", "domain")
# Keras dtype policies (mixed_float16 trains with dynamic loss scaling), or "auto": the fast one of the machine
# (covgan_utils.util.hardware.fast_precision), resolved when training starts and recorded in config.json.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
# Augmentation ops (implemented in covgan_utils.training.augment); the alias "ada" is ADA's pipeline, in ADA's order.
AUGMENT_OPS = ("translation", "cutout", "brightness", "contrast", "xflip", "int_translation", "iso_scale", "rotate",
               "aniso_scale", "frac_translation", "gamma")
AUGMENT_ALIASES = {"ada": ("xflip", "int_translation", "iso_scale", "rotate", "aniso_scale", "frac_translation",
                           "brightness", "contrast", "gamma", "cutout")}
F = fields.field


@fields.checked
class Config:
    """Everything that defines a training run; written to `config.json` in its run folder. Every field declares
    its type and range (`covgan_utils.util.fields`), checked in code, after --set and on loading config.json."""

    LABEL = "config"

    preset: str = F("custom", fields.Text(100))
    # model
    arch: str = F("lean", fields.Choice(*archs.ARCHS))  # "paper" | "lean" | "style" (mapping + modulated convs, residual D) | "fastgan" (SLE G, self-supervised D)
    latent_dim: int = F(100, fields.Int(1, 4096))
    g_base_width: int = F(256, WIDTH)  # lean: channels of the 4x4 map
    g_widths: tuple = F((128, 64, 32, 16, 8), fields.Items(WIDTH, 5, 6))  # lean: channels after each doubling, 8 -> 128; style/fastgan: 6 widths, 4x4 -> 128
    d_widths: tuple = F((16, 32, 64, 128, 256), fields.Items(WIDTH, 5, 6))  # lean/fastgan: channels after each halving, 64 -> 4 (fastgan: 64 -> 8); style: 6, 128 -> 4
    g_noise: bool = F(False, fields.Bool())  # lean: per-pixel noise inputs after every convolution (zero-initialised strength)
    w_dim: int = F(128, fields.Int(1, 4096))  # style: width of the intermediate latent w
    mapping_layers: int = F(4, fields.Int(1, 16))  # style: dense layers of the mapping network
    mbstd_group: int = F(4, fields.Int(1, 1024))  # style: minibatch standard deviation group of the residual discriminator
    recon_weight: float = F(1.0, fields.Float(0.0, 1e6))  # fastgan: weight of the discriminator's reconstruction loss on real images
    conditional: bool = F(False, fields.Bool())  # G and D take the class (index into `classes`); train on every class in `classes`
    upsample: str = F("transpose", fields.Choice(*UPSAMPLES))  # "transpose" (paper) | "resize" (nearest + conv, no checkerboard) | "bilinear"
    g_block_convs: int = F(1, fields.Int(1, 8))  # lean: 3x3 convolutions per doubling
    g_out_kernel: int = F(1, fields.Choice(1, 3))  # lean: kernel of the tanh output convolution (1 or 3)
    d_dropout: float = F(0.3, fields.Float(0.0, 1.0, hi_open=True))
    spectral_norm: bool = F(False, fields.Bool())
    # optimisation
    precision: str = F("float32", fields.Choice(*PRECISIONS))  # training compute: "mixed_*" keeps variables, optimizer state, EMA and losses float32
    devices: int = F(1, fields.Int(1, 4096))  # data-parallel training over this many JAX devices (covgan_utils.training.distribute); checkpoints do not depend on it
    epochs: int = F(100, fields.Int(1, 10**6))
    batch_size: int = F(50, fields.Int(1, 4096))
    lr_g: float = F(2e-4, fields.Float(0.0, 1.0, lo_open=True))
    lr_d: float = F(2e-4, fields.Float(0.0, 1.0, lo_open=True))
    beta_1: float = F(0.5, fields.Float(0.0, 1.0, hi_open=True))
    beta_2: float = F(0.999, fields.Float(0.0, 1.0, hi_open=True))
    g_steps: int = F(1, fields.Int(1, 16))  # generator steps per discriminator step: 1 (1:1) or 2 (2:1) in the paper
    loss: str = F("bce", fields.Choice(*LOSSES))  # "bce" (paper) | "non-saturating" | "hinge" | "wgan-gp"
    gp_weight: float = F(10.0, fields.Float(0.0, 1e6))  # wgan-gp
    r1_gamma: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # R1 penalty weight on real images (0 = off)
    r1_every: int = F(1, fields.Int(1, 1000))  # lazy R1 (StyleGAN2): penalise every k-th step with weight k * r1_gamma
    label_smoothing: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True))  # one-sided: real targets 1 - s (bce / non-saturating)
    ema_decay: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True, off=True))  # generator EMA for sampling (0 = off)
    augment: str = F("", fields.Names(AUGMENT_OPS, tuple(AUGMENT_ALIASES)))  # comma list of AUGMENT_OPS (DiffAugment: translation, cutout, brightness, contrast) or "ada", the full ADA pipeline
    augment_p: float = F(1.0, fields.Float(0.0, 1.0))  # fixed augmentation probability (ada_target = 0)
    ada_target: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True, off=True))  # adaptive p from r_t = E[sign(D(real))] (0 = off)
    ada_kimg: float = F(20.0, fields.Float(0.0, 1e6, lo_open=True))  # images for p to move by 1
    # guard against divergence (see covgan_utils.training.guard)
    guard: bool = F(False, fields.Bool())
    guard_warmup: int = F(10, fields.Int(0, 10**6))  # epochs before the blank / pinned / collapse checks start (non-finite: always)
    guard_patience: int = F(3, fields.Int(1, 10**6))  # consecutive bad epochs before "pinned" or "collapse" trips
    guard_collapse_margin: float = F(0.05, fields.Float(0.0, 1.0))  # collapse: generated MS-SSIM above the real data's by this much
    guard_lr_factor: float = F(0.5, fields.Float(0.0, 1.0, lo_open=True))  # learning rates are multiplied by this on every trip
    guard_max_trips: int = F(5, fields.Int(1, 1000))  # the run stops after this many trips
    # data
    classes: tuple = F(("CT_COVID",), fields.Items(fields.Choice(*sources.CLASSES), 1, len(sources.CLASSES), unique=True))
    flip: bool = F(True, fields.Bool())
    val_fraction: float = F(dataset.VAL_FRACTION, fields.Float(0.0, 1.0, lo_open=True, hi_open=True))  # the shared patient-level split
    split_seed: int = F(dataset.SPLIT_SEED, SEED)
    max_images: int = F(0, fields.Int(0, 10**7, off=True))  # 0 = all train-split images
    time_budget_minutes: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # stop after the first epoch that ends past this wall time (0 = none)
    # bookkeeping
    seed: int = F(0, SEED)
    sample_every: int = F(10, fields.Int(1, 10**6))
    checkpoint_every: int = F(10, fields.Int(1, 10**6))
    keep_checkpoints: int = F(2, fields.Int(1, 1000))
    metrics_every: int = F(0, fields.Int(0, 10**6, off=True))  # 0 = no metric callback
    metrics_features: str = F("auto", fields.Choice(*METRIC_FEATURES))  # features of the callback's KID: "inception" (the [fid] extra; sees texture), "domain" (fast; layout only) or "auto" (inception when installed)
    grid_seeds: int = F(36, fields.Int(1, 1024))

    def check_together(self):
        """Checks between fields: the width lists the family needs."""
        for name, count in zip(("g_widths", "d_widths"), archs.WIDTH_COUNTS[self.arch]):
            if count and len(getattr(self, name)) != count:
                raise ValueError(f"field {name!r} has {len(getattr(self, name))} widths, arch {self.arch!r} needs {count} "
                                 f"({archs.WIDTH_MEANING[self.arch]})")

    def replace(self, **changes):
        """Copy with some fields changed (unknown names, or values out of range, raise a one-line ValueError)."""
        return fields.replace(self, **changes)

    def with_overrides(self, pairs):
        """Copy with `KEY=VALUE` strings applied (the CLI's --set): values parsed and checked by the field's type,
        tuples as comma lists (`g_widths=256,128,64,32,16`), booleans as true/false."""
        return fields.overrides(self, pairs)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    def save(self, run_dir):
        files.write_text_atomic(pathlib.Path(run_dir) / "config.json", self.to_json() + "\n")

    @classmethod
    def load(cls, run_dir):
        """Config from `<run_dir>/config.json`. Fields it lacks take their defaults; a file that is not valid
        JSON, or holds an unknown field or a value of the wrong type or range, raises a one-line ValueError
        naming the file, the field, its value and the allowed range."""
        file = pathlib.Path(run_dir) / "config.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: is {run_dir} a run folder?")
        fix = "restore it or start a new run folder"
        try:
            raw = json.loads(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{file}: not valid JSON (not UTF-8 text: {err.reason} at byte {err.start}); {fix}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno}); {fix}") from None
        return fields.from_json(cls, raw, file, fix=f"fix the field or {fix}", what="config fields", hint=f" (is {run_dir} a GAN run folder?)")


# The recommended training recipe that `best`, `gpu`, `quick` and the other model families share:
# non-saturating loss + lazy R1, DiffAugment (translation, cutout) with adaptive probability, generator EMA,
# no discriminator dropout, batch 32, 400 epochs with samples, checkpoints and metrics every 10, divergence guard.
RECIPE = Config(
    d_dropout=0.0, batch_size=32, loss="non-saturating", r1_gamma=0.2, r1_every=4, augment="translation,cutout", ada_target=0.6,
    ema_decay=0.99, epochs=400, sample_every=10, checkpoint_every=10, metrics_every=10, guard=True,
)
# Recommended: the recipe on the lean generator with resize-convolutions (no checkerboard) and a wider discriminator.
BEST = RECIPE.replace(preset="best", upsample="resize", d_widths=(32, 64, 128, 256, 256))
PRESETS = {
    # The paper's recipe (the defaults): its exact DCGAN (287.6M-parameter generator), BCE, Adam 2e-4, batch 50, 1:1, 5000 epochs.
    "paper": Config(preset="paper", arch="paper", epochs=5000, sample_every=50, checkpoint_every=50),
    "best": BEST,
    # GPU: `best` at 4x width (every layer 4x the channels), batch 64; for tools/gpu_run.sh under KERAS_BACKEND=jax.
    # One H100, JAX 0.11.2: 53 ms per step after compilation, 541 epochs in 6.2 minutes (models/release/job.json:
    # the released generator is this run).
    "gpu": BEST.replace(
        preset="gpu", g_base_width=1024, g_widths=(512, 256, 128, 64, 32), d_widths=(128, 256, 512, 1024, 1024), batch_size=64,
        epochs=5000, sample_every=100, checkpoint_every=100, metrics_every=100,
    ),
    # CPU: `best` on a budget, without the guard: recognisable lungs in well under an hour on 2 cores.
    "quick": BEST.replace(preset="quick", epochs=80, sample_every=5, checkpoint_every=5, guard=False),
    # The model families at CPU size, on the same recipe (see the families ablation in docs/RESULTS.md).
    "style": RECIPE.replace(preset="style", arch="style", g_widths=(128, 128, 64, 32, 16, 8), d_widths=(16, 32, 64, 128, 128, 128)),
    "fastgan": RECIPE.replace(preset="fastgan", arch="fastgan", g_widths=(256, 128, 64, 32, 16, 8), r1_gamma=0.0, r1_every=1),  # no R1
    # Seconds: exercises the real code path in tests and CI.
    "smoke": Config(
        preset="smoke", g_base_width=16, g_widths=(8, 8, 4, 4, 4), d_widths=(4, 4, 8, 8, 8), epochs=2, batch_size=10,
        max_images=40, sample_every=1, checkpoint_every=1, grid_seeds=16,
    ),
}
# Seconds, for the other families (tests and CI): the same tiny data and schedule as `smoke`.
PRESETS["smoke-style"] = PRESETS["smoke"].replace(
    preset="smoke-style", arch="style", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8, 8), w_dim=16, mapping_layers=2, d_dropout=0.0,
)
PRESETS["smoke-fastgan"] = PRESETS["smoke"].replace(
    preset="smoke-fastgan", arch="fastgan", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8), d_dropout=0.0,
)


def get_preset(name, **overrides):
    """Named preset, optionally with some fields changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def default_preset():
    """`smoke` when $COVGAN_SMOKE=1 (CI), else $COVGAN_PRESET, else `quick`."""
    if os.environ.get("COVGAN_SMOKE") == "1":
        return "smoke"
    return os.environ.get("COVGAN_PRESET", "quick")
