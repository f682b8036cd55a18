import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def blob_images():
    """40 smooth synthetic 'scans' [40, 128, 128, 1] in [-1, 1]."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    out = []
    for _ in range(40):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
        out.append(np.tanh(4 * (r - np.hypot(xx - cx, yy - cy))))
    return np.stack(out)[..., None].astype(np.float32)
