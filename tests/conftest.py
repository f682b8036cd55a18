import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX compiles each distinct step once per process; a persistent cache lets later tests (and the
# subprocesses of the cross-backend tests) reuse the compiled steps of earlier ones.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "covgan-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# Two virtual CPU devices for the data-parallel tests (one device runs everything else, as before).
if os.environ.get("KERAS_BACKEND") == "jax" and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from covgan_utils.data import decoding, sources  # noqa: E402

REAL_DATA_MISSING = (
    "needs the real COVID-CT scans: none found by the data search order "
    "($COVGAN_DATA, data/raw/, ../shared/data/covid-ct; `python -m covgan_utils data locate`)"
)


def make_blobs(n=40):
    """n smooth synthetic 'scans' [n, 128, 128, 1] in [-1, 1] (seeded)."""
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.1, 0.3)]
        out.append(np.tanh(4 * (r - np.hypot(xx - cx, yy - cy))))
    return np.stack(out)[..., None].astype(np.float32)


def assert_same_state(a, b, what):
    """Two saved training states (or logged numbers) agree: bit-exact under JAX. Under TensorFlow float32
    rounding may differ by ~1e-6, as its graph optimiser can fuse ops differently in a resumed trace (seen
    on one CI CPU), so there they must match to 1e-4: far below what a lost piece of state (optimizer
    moments, RNG, augmentation p) gives, 1e-2 and more."""
    import keras

    a, b = np.asarray(a), np.asarray(b)
    if keras.backend.backend() == "jax" or not np.issubdtype(a.dtype, np.floating):
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4, err_msg=what)


def one_line_error(capsys, *texts):
    """What a command printed to stderr: exactly one `error: ...` line, no traceback, holding every text -> the line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for text in texts:
        assert text in err, err
    return err


@pytest.fixture
def blob_images():
    """40 smooth synthetic 'scans' [40, 128, 128, 1] in [-1, 1]."""
    return make_blobs()


@pytest.fixture(scope="session")
def real_data():
    """The real COVID-CT data as the project finds it (`sources.find_data_dir`: a folder, or the data cache
    $COVGAN_DATA names); every test that needs the real scans takes it and is skipped, always with
    REAL_DATA_MISSING, when there are none."""
    try:
        return sources.find_data_dir()
    except decoding.DataError:
        pytest.skip(REAL_DATA_MISSING)


# ---------------------------------------------------------------- the source data, before and after everything

def source_fingerprint(folder):
    """{path relative to `folder`: (SHA-256, mode, mtime_ns)} of every file under the real data folder."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        st = path.stat()
        out[str(path.relative_to(folder))] = (sources.sha256_of(path), st.st_mode, st.st_mtime_ns)
    return out


def pytest_sessionstart(session):
    """Fingerprint the real scans before the first test runs (tests/test_source_data.py compares after the last)."""
    try:
        folder = sources.find_data_dir()
    except decoding.DataError:
        folder = None
    session.config.source_before = (folder, source_fingerprint(folder) if folder is not None and folder.is_dir() else None)


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `after_everything` run last, after every other test of the session (the corpus included)."""
    last = [item for item in items if item.get_closest_marker("after_everything")]
    items[:] = [item for item in items if not item.get_closest_marker("after_everything")] + last


def pytest_configure(config):
    config.addinivalue_line("markers", "after_everything: run after every other test of the session")
