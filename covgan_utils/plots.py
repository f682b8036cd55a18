"""Figures of a run: losses (paper Fig. 6), discriminator accuracy (Fig. 7), real vs generated grids (Figs. 4/5)."""
import json
import pathlib

import matplotlib


import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from covgan_utils import config as config_lib  # noqa: E402
from covgan_utils import sample as sample_lib  # noqa: E402
from covgan_utils import tracking  # noqa: E402
from covgan_utils import train as train_lib  # noqa: E402


def read_jsonl(file):
    """List of dicts from a JSON-lines file (empty list when absent)."""
    file = pathlib.Path(file)
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


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


def plot_real_vs_generated(real, generated, n=16):
    """Side by side grids: real scans and generated images, both [N, 128, 128, 1] in [-1, 1]."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, images, title in zip(axes, (real[:n], generated[:n]), ("real", "generated")):
        ax.imshow(sample_lib.make_grid(images), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_run(run_dir, real=None, n=16):
    """Write losses.png, accuracy.png, real_vs_generated.png (and metrics.png when metric logs exist) into the run folder."""
    run_dir = pathlib.Path(run_dir)
    written = []
    for name, fig in (("losses.png", plot_losses(run_dir)), ("accuracy.png", plot_accuracy(run_dir))):
        fig.savefig(run_dir / name, dpi=120)
        plt.close(fig)
        written.append(run_dir / name)
    if real is None:
        _, real = train_lib.training_images(config_lib.Config.load(run_dir))
    real = real[np.random.RandomState(0).permutation(len(real))[:n]]
    generated = sample_lib.generate(sample_lib.load_generator(run_dir), range(n))
    fig = plot_real_vs_generated(real, generated, n)
    fig.savefig(run_dir / "real_vs_generated.png", dpi=120)
    plt.close(fig)
    written.append(run_dir / "real_vs_generated.png")
    if list(run_dir.glob("metric-*.jsonl")):
        fig = tracking.plot_metric_curves(run_dir)
        fig.savefig(run_dir / "metrics.png", dpi=120)
        plt.close(fig)
        written.append(run_dir / "metrics.png")
    return written


def _cli_plot(args):
    run_dir = pathlib.Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    for path in plot_run(run_dir):
        print(path)
