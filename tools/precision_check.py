"""Does mixed precision keep the quality? Train one preset in each precision for several seeds at equal
epochs on the real scans, and compare the Inception KID on the validation patients that the runs' metric
callback logs (`metric-kid*.jsonl`, n = 200 samples per evaluation).

    python tools/precision_check.py --preset best --epochs 30 --seeds 0 1 --out docs/precision-check.json

Runs go to --root (resumed when they are there already); the report is one JSON file: per run the KID at
every evaluation, the wall time, and per precision the mean and spread of the last evaluation's KID.
"""
import argparse
import json
import pathlib
import time

from covgan_utils import config
from covgan_utils.checkpoints import latest_checkpoint
from covgan_utils.training import loop
from covgan_utils.util import files, hardware


def run_one(preset, precision, seed, epochs, root):
    """Train (or finish) one run -> (run folder, wall seconds of this call)."""
    run = pathlib.Path(root) / f"{preset}-{precision}-s{seed}"
    cfg = config.get_preset(preset, epochs=epochs, seed=seed, precision=precision, metrics_every=10)
    start = time.perf_counter()
    loop.train(cfg, run, resume=run.is_dir() and latest_checkpoint(run) is not None, verbose=False)
    return run, time.perf_counter() - start


def kid_curve(run, epochs):
    """[(epoch, KID)] up to `epochs` of the run's Inception KID log (the domain KID when Inception was not installed)."""
    logs = sorted(run.glob("metric-kid*.jsonl"), key=lambda p: "inception" not in p.name)
    if not logs:
        return [], None
    rows = [json.loads(line) for line in logs[0].read_text().splitlines() if line.strip()]
    return [(r["epoch"], r["value"]) for r in rows if r["epoch"] <= epochs], logs[0].stem


def summarise(rows, precisions):
    out = {}
    for precision in precisions:
        finals = [r["kid"][-1][1] for r in rows if r["precision"] == precision and r["kid"]]
        if finals:
            out[precision] = {"seeds": len(finals), "mean": sum(finals) / len(finals), "min": min(finals), "max": max(finals),
                              "spread": max(finals) - min(finals), "wall_seconds": sum(r["wall_seconds"] for r in rows if r["precision"] == precision)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="best")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"], choices=config.PRECISIONS)
    parser.add_argument("--root", default="/tmp/covgan-precision")
    parser.add_argument("--out", default="docs/precision-check.json")
    args = parser.parse_args()
    rows = []
    for precision in args.precisions:  # every seed of the first precision (float32: its seed spread) first
        for seed in args.seeds:
            run, seconds = run_one(args.preset, precision, seed, args.epochs, args.root)
            curve, metric = kid_curve(run, args.epochs)
            rows.append({"precision": precision, "seed": seed, "run": run.name, "metric": metric, "kid": curve, "wall_seconds": round(seconds, 1)})
            report = {"command": f"python tools/precision_check.py --preset {args.preset} --epochs {args.epochs} --seeds "
                                 f"{' '.join(map(str, args.seeds))} --out {args.out}",
                      "preset": args.preset, "epochs": args.epochs, "machine": hardware.hardware(), "rows": rows,
                      "summary": summarise(rows, args.precisions)}
            files.write_text_atomic(pathlib.Path(args.out), json.dumps(report, indent=2) + "\n")
            print(f"{precision} seed {seed}: KID {curve[-1][1] if curve else 'n/a'} after {args.epochs} epochs, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
