"""Calibration ladder: real scans degraded in known, controlled ways, scored like a generator.

A KID of 0.2 says little on its own. Scoring real training scans after a known degradation (lower
resolution, 2x2 blocks, blur, noise) against the same validation scans places a generator's numbers
on a scale: "as far from the validation set as real scans at 32x32 resolution" is something a reader
can picture. Images are float32 [N, 128, 128, 1] in [-1, 1], as everywhere in `covgan_utils.metrics`.

    python -m covgan_utils calibrate --features inception --n 112 --out docs/calibration-inception.json
"""
import time

import numpy as np

from covgan_utils.metrics import features as features_lib
from covgan_utils.metrics import quality


def _per_image(images, fn):
    return np.stack([fn(im[..., 0])[..., None] for im in images]).astype(np.float32)


def downsample(images, size, interpolation="bilinear"):
    """Area-downsample to `size` x `size`, then resize back to the input size."""
    import cv2

    mode = {"bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}[interpolation]
    h = images.shape[1]
    return _per_image(images, lambda im: cv2.resize(cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA), (h, h), interpolation=mode))


def blur(images, sigma):
    """Gaussian blur with standard deviation `sigma` pixels."""
    import cv2

    return _per_image(images, lambda im: cv2.GaussianBlur(im, (0, 0), sigma))


def add_noise(images, sigma, seed=0):
    """Additive Gaussian noise of std `sigma` (in [-1, 1] units), clipped to [-1, 1]."""
    noise = np.random.RandomState(seed).randn(*images.shape).astype(np.float32) * sigma
    return np.clip(images + noise, -1.0, 1.0)


DEGRADATIONS = {  # name -> images -> degraded images, roughly from mild to severe
    "noise 0.05": lambda x: add_noise(x, 0.05),
    "blur 1 px": lambda x: blur(x, 1.0),
    "64x64 bilinear": lambda x: downsample(x, 64, "bilinear"),
    "64x64 blocks": lambda x: downsample(x, 64, "nearest"),
    "noise 0.15": lambda x: add_noise(x, 0.15),
    "32x32 bilinear": lambda x: downsample(x, 32, "bilinear"),
}


SCORED = ("kid", "fid", "prdc")  # the metrics of every row


def ladder(train, val, features="inception", n=112, seed=0, degradations=None):
    """Score real `train` scans, untouched (the floor) and after each degradation, against real `val` scans.

    Returns {"features", "n_probe", "n_real", "rows": {name: {"kid", "fid", "prdc"}}, "wall_seconds"}.
    """
    started = time.time()
    probe = quality.subsample(quality.as_images(train), n, seed + 2)  # [n, 128, 128, 1]
    real = quality.subsample(quality.as_images(val), n, seed + 1)
    metric, least, _ = quality.strictest(SCORED)
    fix = f"pass --n {least} or more" if n < least else "use a data folder with more COVID patients"
    for set_name, images in (("train", probe), ("validation", real)):  # before any feature extraction
        quality.require(metric, set_name, len(images), fix)
    name, extract = features_lib.feature_extractor(features)
    real_f = extract(real)  # [n, d]
    chosen = DEGRADATIONS if degradations is None else {k: DEGRADATIONS[k] for k in degradations}
    rows = {}
    for label, fn in {"real (floor)": lambda x: x, **chosen}.items():
        feats = extract(fn(probe))
        rows[label] = {"kid": quality.kid(feats, real_f, seed=seed), "fid": quality.fid(feats, real_f), "prdc": quality.prdc(feats, real_f)}
    return {"features": name, "n_probe": len(probe), "n_real": len(real), "seed": seed, "rows": rows, "wall_seconds": round(time.time() - started, 1)}


def table(reports, extra=None):
    """Markdown table of one or more ladder reports side by side (one column group per feature set).

    `extra` adds rows {label: [generated-set block of an evaluate report, one per report]}.
    """
    reports = [reports] if isinstance(reports, dict) else list(reports)
    header = ["images scored against the validation scans"]
    for r in reports:
        header += [f"{r['features']} KID", "precision", "recall", "coverage"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = {label: [r["rows"][label] for r in reports] for label in reports[0]["rows"]}
    rows.update(extra or {})
    for label, blocks in rows.items():
        cells = []
        for b in blocks:
            p = b["prdc"]
            cells += [f"{b['kid']['mean']:.4f}", f"{p['precision']:.2f}", f"{p['recall']:.2f}", f"{p['coverage']:.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
