"""Seconds per training step of presets, measured in one process against the `quick` preset as reference.

    python tools/bench_step.py --presets paper quick --steps 3
    python tools/bench_step.py --presets best --precisions float32 mixed_bfloat16 --steps 10
    KERAS_BACKEND=jax python tools/bench_step.py --presets gpu best paper --steps 50

Times the backend's compiled step (`covgan_utils.training.steps`) on a fixed batch, after one warm-up call
that compiles it; the lazy-R1 variant is compiled and timed in its share (1 in `r1_every`).
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from covgan_utils import config
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import losses


def seconds_per_step(preset, steps, precision="float32"):
    cfg = config.get_preset(preset, precision=precision)
    gan = gan_lib.GAN(cfg)
    gan.compile()
    batch = np.zeros((cfg.batch_size, 128, 128, 1), np.float32)
    step = gan.stepper()
    step.load()
    due = [losses.r1_is_due(cfg, i) for i in range(steps)]
    for flag in set(due):
        float(step(batch, flag)["g_loss"])  # compile and warm up
    start = time.perf_counter()
    for flag in due:
        logs = step(batch, flag)
    float(logs["g_loss"])  # wait for the device
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "quick"])
    parser.add_argument("--precisions", nargs="+", default=["float32"], choices=config.PRECISIONS)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    times = {(p, q): seconds_per_step(p, args.steps, q) for p in args.presets for q in args.precisions}
    ref = times.get(("quick", "float32"))
    for (preset, precision), sec in times.items():
        ratio = f", {sec / ref:.1f}x quick" if ref else ""
        speedup = f", {times[(preset, 'float32')] / sec:.2f}x float32" if precision != "float32" and (preset, "float32") in times else ""
        print(f"{preset} {precision}: {sec * 1000:.1f} ms per step (batch {config.get_preset(preset).batch_size}, {keras.backend.backend()}){ratio}{speedup}")


if __name__ == "__main__":
    main()
