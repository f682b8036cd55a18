"""Memorisation: the nearest training image of each sample, a copy test calibrated on held-out scans,
and a figure of the nearest pairs.
"""
import pathlib

import numpy as np

from covgan_utils.metrics.quality import _pairwise, register, thumbnails

COPY_PERCENTILE = 5.0  # copy threshold: this percentile of held-out-to-train nearest distances


def _nearest(queries, refs):
    """(index, distance) of the nearest row of `refs` for each row of `queries`."""
    d = _pairwise(queries, refs)
    idx = d.argmin(axis=1)
    return idx, d[np.arange(len(queries)), idx]


@register("memorisation")
def memorisation(generated, train, held_out, gen_features=None, train_features=None, held_features=None, percentile=COPY_PERCENTILE):
    """Nearest training image of every sample, in pixels (32x32) and, if given, in features.

    A sample is flagged as a copy when it lies closer to its nearest training image than the
    `percentile`-th percentile of the held-out (validation) scans' nearest-training distances: real
    unseen scans sit that close to the training set only 5% of the time. Returns copy fractions,
    thresholds and the nearest index/distance per sample (for `save_nearest_pairs`).
    """
    spaces = {"pixels": (thumbnails(generated), thumbnails(train), thumbnails(held_out))}
    if gen_features is not None and train_features is not None and held_features is not None:
        spaces["features"] = (gen_features, train_features, held_features)
    out = {}
    for name, (g, t, h) in spaces.items():
        idx, dist = _nearest(g, t)
        _, held_dist = _nearest(h, t)
        threshold = float(np.percentile(held_dist, percentile))
        out[name] = {
            "copy_fraction": float((dist < threshold).mean()),
            "threshold": threshold,
            "median_distance": float(np.median(dist)),
            "held_out_median_distance": float(np.median(held_dist)),
            "nearest_index": idx.tolist(),
            "nearest_distance": dist.tolist(),
        }
    return out


def save_nearest_pairs(generated, train, nearest_index, nearest_distance, out_file, count=8):
    """Save the `count` samples closest to their nearest training image, side by side, as a PNG."""
    from matplotlib.figure import (
        Figure,  # no pyplot: no global state, works without a display
    )

    order = np.argsort(nearest_distance)[:count]
    fig = Figure(figsize=(1.6 * len(order), 3.6))
    axes = fig.subplots(2, len(order), squeeze=False)
    for col, i in enumerate(order):
        axes[0, col].imshow(generated[i, ..., 0], cmap="gray", vmin=-1, vmax=1)
        axes[0, col].set_title(f"d={nearest_distance[i]:.2f}", fontsize=8)
        axes[1, col].imshow(train[nearest_index[i], ..., 0], cmap="gray", vmin=-1, vmax=1)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("sample")
    axes[1, 0].set_ylabel("nearest train")
    fig.tight_layout()
    out_file = pathlib.Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file, dpi=100)
    return fig
