import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX compiles each distinct step once per process; a persistent cache lets later tests (and the
# subprocesses of the cross-backend tests) reuse the compiled steps of earlier ones.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "covgan-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def make_blobs(n=40):
    """n smooth synthetic 'scans' [n, 128, 128, 1] in [-1, 1] (seeded)."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
        out.append(np.tanh(4 * (r - np.hypot(xx - cx, yy - cy))))
    return np.stack(out)[..., None].astype(np.float32)


@pytest.fixture
def blob_images():
    """40 smooth synthetic 'scans' [40, 128, 128, 1] in [-1, 1]."""
    return make_blobs()
