"""One training path on two Keras backends: checkpoints that cross backends, TensorFlow kept off the JAX
path, and the NumPy MS-SSIM (the layering of the package: test_layering.py)."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from widget_fixtures import make_scans

from covgan_utils import sampling
from covgan_utils.metrics import quality

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "covgan_utils"
BOTH_BACKENDS = all(importlib.util.find_spec(m) is not None for m in ("jax", "tensorflow"))


def _env(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    env.pop("COVGAN_SMOKE", None)
    return env


def _python(code_or_args, backend, timeout=900):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    done = subprocess.run([sys.executable, *args], env=_env(backend), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{backend}: {' '.join(args)[:200]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_numpy_ms_ssim_matches_tensorflow(blob_images):
    tf = pytest.importorskip("tensorflow")
    a, b = blob_images[:12], blob_images[12:24]
    expected = tf.image.ssim_multiscale(tf.constant((a + 1) / 2), tf.constant((b + 1) / 2), max_val=1.0, filter_size=7).numpy()
    np.testing.assert_allclose(quality._ms_ssim_pairs(a, b), expected, atol=2e-5)
    np.testing.assert_allclose(quality._ms_ssim_pairs(a, a), 1.0, atol=1e-6)


@pytest.mark.skipif(not BOTH_BACKENDS, reason="needs both TensorFlow and JAX installed")
@pytest.mark.parametrize("first, second", [("jax", "tensorflow"), ("tensorflow", "jax")])
def test_a_run_started_on_one_backend_resumes_on_the_other(tmp_path, first, second):
    scans = make_scans(tmp_path / "scans", n_patients=10)
    run = tmp_path / "run"
    base = ["-m", "covgan_utils", "train", "--preset", "smoke", "--run-dir", str(run), "--data", str(scans)]
    recipe = ["augment=translation,cutout", "ada_target=0.6", "ema_decay=0.9", "r1_gamma=1.0", "r1_every=2", "loss=non-saturating"]
    _python(base + ["--epochs", "1", "--set", *recipe], first)
    _python(base + ["--epochs", "2", "--resume"], second)
    rows = [json.loads(line) for line in open(run / "stats.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(np.isfinite(r[k]) for r in rows for k in ("d_loss", "g_loss", "r_t"))
    with np.load(run / "checkpoint-000002.npz", allow_pickle=False) as z:
        assert str(z["backend"]) == second and int(z["epoch"]) == 2
        assert int(z["d_opt/0000"]) == 2 * int(rows[0]["images_seen"]) // 10  # the step counter went on
    assert (run / "samples-000002.png").is_file()
    out = _python(f"from covgan_utils import runs, sampling; import numpy as np; print(float(np.abs(sampling.generate(runs.load_generator({str(run)!r}), range(4))).max()))", first)
    assert 0.0 < float(out.split()[-1]) <= 1.0  # and the resumed run samples on the backend it started on


NO_TENSORFLOW = """
import importlib.abc, sys
class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("tensorflow is not installed here")
sys.meta_path.insert(0, NoTensorFlow())
from covgan_utils import cli
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
def test_the_jax_path_runs_with_tensorflow_unimportable(tmp_path):
    scans = make_scans(tmp_path / "scans", n_patients=10)
    run, out = tmp_path / "run", tmp_path / "out"
    calls = [
        ["train", "--preset", "smoke", "--run-dir", str(run), "--data", str(scans), "--epochs", "2", "--set", "metrics_every=1", "metrics_features=domain", "guard=true", "guard_warmup=1"],
        ["sample", "--run", str(run), "--n", "16", "--out", str(out / "samples")],
        ["interpolate", "--run", str(run), "--seed-a", "1", "--seed-b", "2", "--steps", "3", "--out", str(out / "strip.png")],
        ["evaluate", "--generated", str(out / "samples"), "--real", str(scans / "CT_COVID"), "--out", str(out / "eval.json"), "--n", "16", "--features", "domain"],
        ["plot", "--run", str(run), "--data", str(scans)],
    ]
    code = NO_TENSORFLOW + "".join(f"assert cli.main({c!r}) == 0, {c[0]!r}\n" for c in calls) + "assert 'tensorflow' not in sys.modules\nprint('ok')\n"
    assert _python(code, "jax").split()[-1] == "ok"
    assert len(list((out / "samples").glob("seed*.png"))) == 16 and (out / "strip.png").is_file()
    assert json.loads((out / "eval.json").read_text())["features"] == "domain"
    assert (run / "losses.png").is_file() and (run / "real_vs_generated.png").is_file()
    assert [json.loads(line)["epoch"] for line in open(run / "metric-kid.jsonl")] == [1, 2]  # metric callback, domain features


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs JAX")
def test_importing_train_and_sample_under_jax_leaves_tensorflow_out():
    code = "import sys\nimport covgan_utils.training.loop, covgan_utils.sampling, covgan_utils.metrics.report\nprint('tensorflow' in sys.modules)\n"
    assert _python(code, "jax").split()[-1] == "False"


def test_sample_noise_is_the_same_function_of_the_seed_everywhere():
    np.testing.assert_array_equal(sampling.noise_for_seeds([5])[0], np.random.RandomState(5).randn(100).astype(np.float32))
