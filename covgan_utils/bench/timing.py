"""The timing protocol, the device's measured matmul peak and the peak memory of the process.

Every step is timed the same way: one warm-up call per step variant (it compiles the variant), then
`steps` timed calls in the variants' order, then a `float(...)` of the last call's log, which waits
for the device. Two steps whose times are compared (extras off against textbook; the step in training
against the bare step) are timed in pairs of rounds, one after the other, so that a slow phase of a
shared machine slows both sides of a pair: their ratio is the median of the rounds' ratios.
"""
import statistics
import resource
import time

import keras
import numpy as np
from keras import ops

from covgan_utils.training import gan as gan_lib
from covgan_utils.training import losses


def seconds_per_call(call, variants, log_key, warm_up=True):
    """Seconds per call of `call(variant)` over the list `variants` (one timed call each), after one
    warm-up call of every distinct variant (`warm_up`)."""
    if warm_up:
        warm(call, variants, log_key)
    start = time.perf_counter()
    for variant in variants:
        logs = call(variant)
    float(logs[log_key])  # wait for the device
    return (time.perf_counter() - start) / len(variants)


def warm(call, variants, log_key="g_loss"):
    """One call of every distinct variant: compiles each and waits for the device."""
    for variant in dict.fromkeys(variants):
        float(call(variant)[log_key])


def project_caller(config, batch, steps):
    """(call, variants) of the project's compiled training step (`GAN.stepper`) on a fixed batch
    [B, 128, 128, 1]: `call(r1_due)` runs one step, `variants` the lazy-R1 flags of `steps` steps
    (`losses.r1_is_due`), so that R1 runs in its share."""
    gan = gan_lib.GAN(config)
    gan.compile()
    step = gan.stepper()
    step.load()
    return (lambda flag: step(batch, flag)), [losses.r1_is_due(gan.config, i) for i in range(steps)]


def project_step(config, batch, steps):
    """Seconds per step of the project's compiled training step on a fixed batch [B, 128, 128, 1]."""
    return seconds_per_call(*project_caller(config, batch, steps), "g_loss")


def paired(calls, rounds):
    """Paired timing of two or more steps: `calls` {name: (call, variants)}; every variant is warmed up,
    then in each of `rounds` rounds each call runs its share of `variants` (the order reversed every other
    round) -> ({name: seconds per call over all rounds}, {name: [seconds per call, one per round]})."""
    for call, variants in calls.values():
        warm(call, variants)
    names, per_round = list(calls), {name: [] for name in calls}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            call, variants = calls[name]
            share = variants[r * len(variants) // rounds:(r + 1) * len(variants) // rounds] or variants[:1]
            per_round[name].append((seconds_per_call(call, share, "g_loss", warm_up=False), len(share)))
    means = {name: sum(s * n for s, n in rs) / sum(n for _, n in rs) for name, rs in per_round.items()}
    return means, {name: [s for s, _ in rs] for name, rs in per_round.items()}


def median_ratio(numerators, denominators):
    """Median of the element-wise ratios of two paired lists of times."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def extras_off(config):
    """`config` with augmentation, ADA, R1 and EMA off, the non-saturating loss and one G update per step:
    the work of the textbook step."""
    return config.replace(augment="", ada_target=0.0, r1_gamma=0.0, r1_every=1, ema_decay=0.0, loss="non-saturating",
                          g_steps=1, label_smoothing=0.0)


def matmul_peak(size, dtype, repeats):
    """Best FLOP/s of a [size, size] x [size, size] `keras.ops.matmul` in `dtype` over `repeats` timed runs
    of 4 products each (after a warm-up) -> {"dtype", "size", "flops_per_s", "ms"}."""
    rng = np.random.default_rng(0)
    a = ops.cast(ops.convert_to_tensor(rng.standard_normal((size, size), np.float32)), dtype)  # [size, size]
    b = ops.cast(ops.convert_to_tensor(rng.standard_normal((size, size), np.float32)), dtype)
    float(ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32")))  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = [ops.matmul(a, b) for _ in range(4)]
        float(ops.convert_to_numpy(ops.cast(out[-1][0, 0], "float32")))  # the products run in order: the last one waits for all
        best = min(best, (time.perf_counter() - start) / 4)
    return {"dtype": dtype, "size": size, "flops_per_s": 2 * size**3 / best, "ms": 1000 * best}


def peak_memory():
    """(bytes, what they are): the GPU's peak bytes in use under JAX on a GPU, else the process's peak
    resident set size (ru_maxrss)."""
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform == "gpu" else None
        if stats and "peak_bytes_in_use" in stats:
            return int(stats["peak_bytes_in_use"]), "GPU peak bytes in use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS of the process"
