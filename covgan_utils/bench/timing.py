"""The timing protocol, the device's measured matmul peak and the peak memory of the process.

Every step is timed the same way: one warm-up call per step variant (it compiles the variant), then
`steps` timed calls in the variants' order, then a `float(...)` of the last call's log, which waits
for the device.
"""
import resource
import time

import keras
import numpy as np
from keras import ops

from covgan_utils.training import gan as gan_lib
from covgan_utils.training import losses


def seconds_per_call(call, variants, log_key):
    """Seconds per call of `call(variant)` over the list `variants` (one timed call each), after one
    warm-up call of every distinct variant."""
    for variant in dict.fromkeys(variants):
        float(call(variant)[log_key])  # compile and warm up
    start = time.perf_counter()
    for variant in variants:
        logs = call(variant)
    float(logs[log_key])  # wait for the device
    return (time.perf_counter() - start) / len(variants)


def project_step(config, batch, steps):
    """Seconds per step of the project's compiled training step (`GAN.stepper`) on a fixed batch
    [B, 128, 128, 1], the lazy-R1 variant in its share (`losses.r1_is_due`)."""
    gan = gan_lib.GAN(config)
    gan.compile()
    step = gan.stepper()
    step.load()
    due = [losses.r1_is_due(gan.config, i) for i in range(steps)]
    return seconds_per_call(lambda flag: step(batch, flag), due, "g_loss")


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
