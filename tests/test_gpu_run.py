"""The one-command GPU run: `tools/gpu_run.sh prepare` (wheels + data cache) and `run` (`gpu-job`), end to end on CPU."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from covgan_utils import cli, runs, sampling
from covgan_utils.cli import studies as cli_studies
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.studies import gpu_job
from covgan_utils.util import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "gpu_run.sh"
# Backend of the run half. The script defaults to jax (the GPU machine has no TensorFlow); the test pins
# tensorflow until train.py's JAX path has landed. Set to None to test the script's default.
RUN_BACKEND = None  # the script's default backend (jax)
EXPECTED = {"generator.npz", "config.json", "source.json", "stats.jsonl", "samples.png", "metrics.json", "job.json"}


def _script(*args, backend=None, timeout=300):
    env = {**os.environ, "PYTHON": sys.executable, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    if backend:
        env["KERAS_BACKEND"] = backend
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.network
def test_prepare_then_run_returns_a_small_scored_generator(tmp_path):
    from widget_fixtures import make_scans

    scans = make_scans(tmp_path / "scans", n_patients=5, slices=4)  # seed-0 split: 1 of 5 COVID patients held out
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    prepared = _script("prepare", bundle, "--python-version", pyver, "--data", scans)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["keras", "namex", "optree", "typing_extensions"]
    assert "keras-3.10.0-" in wheels[0] and f"cp{pyver.replace('.', '')}" in wheels[2]
    assert len(dataset.load_dataset(bundle / "covid-ct.npz", classes=sources.CLASSES, flip=False)) == 40

    ran = _script("run", bundle, out, "--preset", "smoke", "--epochs", 1, "--n-eval", 16, "--run-dir", tmp_path / "run", backend=RUN_BACKEND)
    assert ran.returncode == 0, ran.stderr[-3000:]
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    assert set(files) == EXPECTED and len(files) <= gpu_job.MAX_FILES
    assert all(size < gpu_job.MAX_FILE_BYTES for size in files.values())
    with np.load(out / "generator.npz", allow_pickle=False) as z:
        assert {z[k].dtype for k in z.files if z[k].dtype.kind == "f"} == {np.dtype(np.float16)}
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in stats] == [1]
    report = json.loads((out / "metrics.json").read_text())
    assert report["features"] == "domain" and np.isfinite(report["generated"]["kid"]["mean"])
    job = json.loads((out / "job.json").read_text())
    assert job["keras_backend"] == (RUN_BACKEND or "jax") and job["epochs_done"] == 1 and job["steps"] == job["steps_per_epoch"] > 0
    assert job["seconds_per_step_mean"] > 0 and job["devices"]
    prefix = pathlib.Path(job["keras_location"]).parent
    assert prefix.name.startswith("covgan-gpu-site.") and not prefix.exists()  # the bundled keras was used, then removed


    images = sampling.generate(runs.load_release(out), range(4))
    assert images.shape == (4, 128, 128, 1) and np.isfinite(images).all()


def test_script_rejects_bad_arguments_with_usage(tmp_path):
    for args in ((), ("frob",), ("run", tmp_path), ("run", tmp_path, tmp_path / "o", "--bogus"), ("prepare", "--python-version"), ("prepare", "--python-version", "3")):
        done = _script(*args)
        assert done.returncode == 2 and "usage: tools/gpu_run.sh" in done.stderr, args
    for args in (("ablation", tmp_path), ("ablation", tmp_path, tmp_path / "o", "--seeds", "x"), ("ablation", tmp_path, tmp_path / "o", "stray")):
        done = _script(*args)
        assert done.returncode == 2 and "usage: tools/gpu_run.sh" in done.stderr, args
    missing = _script("run", tmp_path / "nowhere", tmp_path / "o")
    assert missing.returncode == 2 and "prepare" in missing.stderr and not (tmp_path / "o").exists()


def test_output_limits_are_checked(tmp_path):
    assert gpu_job.check_outputs(tmp_path) == tmp_path
    with open(tmp_path / "generator.npz", "wb") as fh:
        fh.truncate(gpu_job.MAX_FILE_BYTES)  # sparse: 16 MB on paper, nothing on disk
    with pytest.raises(ValueError, match=r"16 MB limit: generator.npz \(16.0 MB\)"):
        gpu_job.check_outputs(tmp_path)
    (tmp_path / "generator.npz").unlink()
    for i in range(gpu_job.MAX_FILES + 1):
        (tmp_path / f"f{i}.txt").write_text("x")
    with pytest.raises(ValueError, match="9 entries, at most 8"):
        gpu_job.check_outputs(tmp_path)


def test_step_timing_from_stats_rows():
    rows = [{"epoch": 1, "seconds": 10.0, "images_seen": 320}, {"epoch": 2, "seconds": 2.0, "images_seen": 640}]
    timing = gpu_job.step_timing(rows, batch_size=32)
    assert timing == {"epochs_done": 2, "steps_per_epoch": 10, "steps": 20, "seconds_per_step_mean": 0.6, "seconds_per_step_after_first_epoch": 0.2}
    assert gpu_job.step_timing([], 32)["epochs_done"] == 0


def test_run_job_refuses_bad_input_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.json").write_text("{}")
    not_cache = tmp_path / "scans.npz"
    not_cache.write_text("no")
    with pytest.raises(decoding.DataError, match="scans.npz is not a COVID-CT data cache.*export-cache"):
        gpu_job.run_job(not_cache, tmp_path / "out", preset="smoke")
    with pytest.raises(ValueError, match="unknown preset"):
        gpu_job.run_job(not_cache, tmp_path / "out", preset="nope")
    with pytest.raises(ValueError, match="minutes must be positive"):
        gpu_job.run_job(not_cache, tmp_path / "out", preset="smoke", minutes=0)
    from widget_fixtures import make_scans

    cache = dataset.export_cache(tmp_path / "c.npz", make_scans(tmp_path / "scans", n_patients=2, slices=1))
    with pytest.raises(ValueError, match="full is not empty"):
        gpu_job.run_job(cache, tmp_path / "full", preset="smoke")
    assert not (tmp_path / "out").exists()


def test_gpu_job_is_a_cli_command():

    args = cli.build_parser().parse_args(["gpu-job", "--data", "c.npz", "--out", "o", "--preset", "smoke", "--minutes", "2", "--epochs", "3"])
    assert (args.data, args.out, args.preset, args.minutes, args.epochs, args.n_eval) == ("c.npz", "o", "smoke", 2.0, 3, 500)
    assert args.handler is cli_studies.cmd_gpu_job and args.backend
