"""Synthetic CT-like images for tests that need no real scans."""
import numpy as np


def blobs(n, seed, size=128, count=6):
    """Smooth random images: sums of Gaussian blobs on a dark background, float32 [n, size, size, 1] in [-1, 1]."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = rng.uniform(0.15, 0.85, (2, n, count, 1, 1)).astype(np.float32)
    width = rng.uniform(0.05, 0.2, (n, count, 1, 1)).astype(np.float32)
    amp = rng.uniform(0.3, 1.0, (n, count, 1, 1)).astype(np.float32)
    img = (amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width ** 2))).sum(axis=1)  # [n, size, size]
    return (img / img.max(axis=(1, 2), keepdims=True) * 2.0 - 1.0)[..., None].astype(np.float32)
