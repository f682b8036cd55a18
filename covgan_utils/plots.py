"""Figures of a run folder: losses, discriminator accuracy, real vs generated grids, and the metric curves
written during training (`metric-<name>.jsonl`).
"""
import json
import pathlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np

from covgan_utils import config as config_lib
from covgan_utils import runs, sampling
from covgan_utils.data import dataset
from covgan_utils.util.files import read_jsonl


def plot_metric_curves(run_dir):
    """Figure with one panel per `metric-*.jsonl` file in `run_dir` (value against epoch; the best
    epoch from best.json is marked)."""
    run_dir = pathlib.Path(run_dir)
    files = sorted(run_dir.glob("metric-*.jsonl"))
    best = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else None
    if not files:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, f"no metric-*.jsonl in {run_dir.name}", ha="center", va="center")
        ax.axis("off")
        return fig
    cols = min(3, len(files))
    rows = (len(files) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, file in zip(axes.ravel(), files):
        name = file.stem[len("metric-"):]
        records = read_jsonl(file)
        epochs = [r["epoch"] for r in records]
        values = [r["value"] for r in records]
        ax.plot(epochs, values, marker="o", ms=3)
        if "std" in (records[0] if records else {}):
            std = np.array([r["std"] for r in records])
            ax.fill_between(epochs, np.array(values) - std, np.array(values) + std, alpha=0.25)
        if best is not None:
            ax.axvline(best["epoch"], color="gray", ls="--", lw=1)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[len(files):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def metric_table(run_dir):
    """Markdown table of the metrics written during training: one line per scored epoch with the images seen,
    the training minutes so far (stats.jsonl), each `metric-<name>.jsonl` value (+- its std where logged) and
    the guard trips recorded up to that epoch (guard.jsonl). Empty when the run logged no metrics."""
    run_dir = pathlib.Path(run_dir)
    metrics = {f.stem[len("metric-"):]: {r["epoch"]: r for r in read_jsonl(f)} for f in sorted(run_dir.glob("metric-*.jsonl"))}
    if not metrics:
        return ""
    seen, minutes, total = {}, {}, 0.0
    for row in read_jsonl(run_dir / "stats.jsonl") if (run_dir / "stats.jsonl").is_file() else []:
        total += row.get("seconds", 0.0)
        seen[row["epoch"]], minutes[row["epoch"]] = row.get("images_seen"), total / 60.0  # a rolled-back epoch: its last pass
    trips = [r["epoch"] for r in read_jsonl(run_dir / "guard.jsonl")] if (run_dir / "guard.jsonl").is_file() else []
    header = ["epoch", "images seen", "training min"] + list(metrics) + ["guard trips so far"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for epoch in sorted(set().union(*metrics.values())):
        cells = [str(epoch), str(seen.get(epoch, "")), f"{minutes[epoch]:.1f}" if epoch in minutes else ""]
        for records in metrics.values():
            r = records.get(epoch)
            cells.append("" if r is None else f"{r['value']:.4g}" + (f" ± {r['std']:.2g}" if "std" in r else ""))
        cells.append(str(sum(t <= epoch for t in trips)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stats(run_dir):
    rows = read_jsonl(pathlib.Path(run_dir) / "stats.jsonl")
    if not rows:
        raise FileNotFoundError(f"no stats.jsonl in {run_dir}: has the run trained an epoch yet?")
    return rows


def _plot_series(run_dir, series, ylabel, title, **axis):
    rows = _stats(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    for key, label in series:
        ax.plot(epochs, [r[key] for r in rows], label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=f"{title}: {pathlib.Path(run_dir).name}", **axis)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_losses(run_dir):
    """Generator and discriminator loss per epoch."""
    return _plot_series(run_dir, (("g_loss", "generator"), ("d_loss", "discriminator")), "loss", "Losses")


def plot_accuracy(run_dir):
    """Discriminator accuracy on real and on generated images per epoch."""
    series = (("d_acc_real", "real judged real"), ("d_acc_fake", "generated judged fake"))
    return _plot_series(run_dir, series, "accuracy", "Discriminator accuracy", ylim=(-0.02, 1.02))


def plot_health(run_dir):
    """Blank-image fraction and within-set MS-SSIM of a fixed sample batch per epoch (`health.jsonl`)."""
    file = pathlib.Path(run_dir) / "health.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"no health.jsonl in {run_dir}: train with callbacks.HealthLog (the paper job does)")
    rows = read_jsonl(file)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = [r["epoch"] for r in rows]
    ax.plot(epochs, [r["blank_fraction"] for r in rows], label="blank fraction")
    ax.plot(epochs, [r["ms_ssim"] for r in rows], label="MS-SSIM within the batch (high: collapse)")
    ax.set(xlabel="epoch", ylabel="fraction / similarity", ylim=(-0.02, 1.02), title=f"Sample health: {pathlib.Path(run_dir).name}")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_real_vs_generated(real, generated, n=16):
    """Side by side grids: real scans and generated images, both [N, 128, 128, 1] in [-1, 1]."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, images, title in zip(axes, (real[:n], generated[:n]), ("real", "generated")):
        ax.imshow(sampling.make_grid(images), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_run(run_dir, real=None, n=16):
    """Write losses.png, accuracy.png, real_vs_generated.png (and metrics.png and metrics.md, `metric_table`, when
    metric logs exist) into the run folder."""
    run_dir = pathlib.Path(run_dir)
    written = []
    for name, fig in (("losses.png", plot_losses(run_dir)), ("accuracy.png", plot_accuracy(run_dir))):
        fig.savefig(run_dir / name, dpi=120)
        plt.close(fig)
        written.append(run_dir / name)
    if real is None:
        _, real = dataset.training_images(config_lib.Config.load(run_dir))
    real = real[np.random.RandomState(0).permutation(len(real))[:n]]
    generated = sampling.generate(runs.load_generator(run_dir), range(n))  # through the run's scaling
    fig = plot_real_vs_generated(real, generated, n)
    fig.savefig(run_dir / "real_vs_generated.png", dpi=120)
    plt.close(fig)
    written.append(run_dir / "real_vs_generated.png")
    if list(run_dir.glob("metric-*.jsonl")):
        fig = plot_metric_curves(run_dir)
        fig.savefig(run_dir / "metrics.png", dpi=120)
        plt.close(fig)
        (run_dir / "metrics.md").write_text(metric_table(run_dir) + "\n")
        written += [run_dir / "metrics.png", run_dir / "metrics.md"]
    return written
