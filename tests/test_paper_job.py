"""The paper's own model as a GPU job (`studies.paper_job`, `paper-job`, `tools/gpu_run.sh paper`), end to end on CPU
with the smoke model standing in for the paper's 287.6M-parameter one."""
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import one_line_error
from PIL import Image
from widget_fixtures import make_scans

from covgan_utils import cli, runs, sampling
from covgan_utils import config as config_lib
from covgan_utils.data import dataset, decoding, scaling
from covgan_utils.studies import gpu_job, paper_job
from covgan_utils.util import files

RUNS = ("1:1", "1:1 paper-code")
EPOCHS = 2
N_SAMPLES = 16
SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "tools" / "gpu_run.sh"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A data cache of synthetic scans: 5 patients per class, 4 slices each (seed-0 split: 1 COVID patient held out)."""
    folder = tmp_path_factory.mktemp("paper-data")
    return dataset.export_cache(folder / "covid-ct.npz", make_scans(folder / "scans", n_patients=5, slices=4))


@pytest.fixture(scope="module")
def job(cache, tmp_path_factory):
    """The returned folder of a two-run job: the smoke model, 2 epochs each, a grid every epoch."""
    root = tmp_path_factory.mktemp("paper-job")
    return paper_job.run_paper_job(cache, root / "out", runs=RUNS, minutes=5.0, preset="smoke", n_samples=N_SAMPLES, grid_every=1,
                                   overrides={"epochs": EPOCHS}, work_dir=root / "work", verbose=False)


@pytest.fixture(scope="module")
def unpacked(job, tmp_path_factory):
    return paper_job.unpack(job, tmp_path_factory.mktemp("paper-unpacked") / "runs")


def test_one_small_tar_per_run_and_the_job_file_come_back(job):
    sizes = {p.name: p.stat().st_size for p in job.iterdir()}
    assert set(sizes) == {"1to1.tar", "1to1-paper-code.tar", "job.json"}
    assert gpu_job.check_outputs(job) == job and max(sizes.values()) < gpu_job.MAX_FILE_BYTES
    with tarfile.open(job / "1to1-paper-code.tar") as tar:
        assert set(tar.getnames()) == set(paper_job.PACKED)
    info = paper_job.read_job(job)
    assert info["keras_backend"] and info["devices"] and info["minutes_per_run"] == 2.5 and info["precision"] == "float32"
    assert [(r["run"], r["g_steps"], r["scaling"], r["file"]) for r in info["runs"]] == [
        ("1:1", 1, "full", "1to1.tar"), ("1:1 paper-code", 1, "paper-code", "1to1-paper-code.tar")]
    for run in info["runs"]:
        assert run["epochs_done"] == EPOCHS and run["steps"] == EPOCHS * run["steps_per_epoch"] > 0 and run["seconds_per_step_mean"] > 0
        assert run["last_health"]["epoch"] == EPOCHS and run["time_budget_minutes"] == 2.5


def test_every_epoch_logs_losses_accuracy_blank_fraction_and_diversity(unpacked):
    assert list(unpacked) == list(RUNS)
    for name, folder in unpacked.items():
        stats, health = files.read_jsonl(folder / "stats.jsonl"), files.read_jsonl(folder / "health.jsonl")
        assert [r["epoch"] for r in stats] == [r["epoch"] for r in health] == list(range(1, EPOCHS + 1))
        for row in stats:
            assert np.isfinite([row["d_loss"], row["g_loss"]]).all() and 0 <= row["d_acc_real"] <= 1 and 0 <= row["d_acc_fake"] <= 1
        for row in health:
            assert 0.0 <= row["blank_fraction"] <= 1.0 and 0.0 <= row["ms_ssim"] <= 1.0 and row["n"] == 32
        config = config_lib.Config.load(folder)
        assert config.scaling == ("paper-code" if "paper-code" in name else "full") and config.precision == "float32"
        assert config.epochs == EPOCHS and config.sample_every == 1 and config.arch == "lean"  # the smoke model, as asked


def test_the_samples_and_figures_read_back(unpacked):
    for name, folder in unpacked.items():
        samples = paper_job.load_samples(folder)
        assert samples.shape == (N_SAMPLES, 128, 128, 1) and samples.dtype == np.float32
        assert samples.min() >= -1.0 and samples.max() <= 1.0
        with np.load(folder / "samples.npz") as z:
            assert z["samples"].dtype == np.uint8 and str(z["scaling"]) == config_lib.Config.load(folder).scaling
        np.testing.assert_array_equal(paper_job.samples_of(folder, 4), samples[:4])
        assert Image.open(folder / "interpolation.png").size == (8 * 130 - 2, 128)  # 8 frames in one row
        assert paper_job.interpolation_strip(folder) == folder / "interpolation.png"
        montage = Image.open(folder / "montage.png")
        assert montage.size[0] == EPOCHS * (320 + 4) - 4 and montage.size[1] > 320  # one labelled grid per epoch
        assert Image.open(folder / "samples.png").size == (4 * 130 - 2,) * 2  # the last grid: the smoke preset's 16 seeds


def test_the_samples_are_the_generator_seen_through_the_runs_scaling(job, unpacked):
    work = job.parent / "work"  # the run folders the job trained, with their checkpoints
    for name, folder in unpacked.items():
        spec = paper_job.parse_run(name)
        generator = runs.load_generator(work / spec.slug)
        z = sampling.noise_for_seeds(list(range(N_SAMPLES)), sampling.latent_dim_of(generator))  # [N, latent]
        seen = np.clip(scaling.to_view(np.asarray(generator(z, training=False)), spec.scaling), -1, 1)  # [N, 128, 128, 1]
        with np.load(folder / "samples.npz") as z:
            np.testing.assert_array_equal(z["samples"], decoding.to_uint8(seen)[..., 0])


def test_scoring_the_returned_job_here(job, cache, tmp_path):
    table_file = paper_job.score_job(job, cache, tmp_path / "runs", n=N_SAMPLES, features="domain", ms_ssim_pairs=50)
    table = json.loads(table_file.read_text())
    assert table_file == tmp_path / "runs" / "scores.json" and table["features"] == "domain" and table["n"] == N_SAMPLES
    assert list(table["runs"]) == list(RUNS)
    for name, row in table["runs"].items():
        assert row["epochs"] == EPOCHS and np.isfinite(row["KID"]) and 0.0 <= row["blank fraction"] <= 1.0
        report = json.loads((tmp_path / "runs" / paper_job.parse_run(name).slug / "metrics-domain.json").read_text())
        assert report["generated"]["n_generated"] == N_SAMPLES and report["generated"]["kid"]["mean"] == row["KID"]
    assert np.isfinite(table["floor"]["KID"]) and 0 < table["real_ms_ssim"] < 1


def test_run_names():
    assert [paper_job.parse_run(n).slug for n in ("1:1", "2:1", " 2:1  paper-code ", "1:1 full")] == ["1to1", "2to1", "2to1-paper-code", "1to1"]
    assert paper_job.parse_run(" 2:1  paper-code ").name == "2:1 paper-code"
    for bad in ("3:2", "1:1 paper", "0:1", "", "1:1 paper-code x", "two"):
        with pytest.raises(ValueError, match="unknown run"):
            paper_job.parse_run(bad)
    with pytest.raises(ValueError, match="requested twice"):
        paper_job.parse_runs(["1:1", "1:1 full"])
    with pytest.raises(ValueError, match="1 to 7"):
        paper_job.parse_runs([f"{g}:1" for g in range(1, 9)])


def test_bad_job_input_is_refused_before_training(cache, tmp_path):
    for kwargs, message in (({"n_samples": 5000}, "n_samples must be in"), ({"minutes": 0}, "minutes must be positive"),
                            ({"runs": ["17:1"]}, "g_steps"), ({"preset": "nope"}, "unknown preset")):
        with pytest.raises(ValueError, match=message):
            paper_job.run_paper_job(cache, tmp_path / "out", **{"preset": "smoke", **kwargs})
    assert not (tmp_path / "out").exists()


def test_paper_job_on_the_command_line(cache, tmp_path, capsys):
    out, work = tmp_path / "out", tmp_path / "work"
    argv = ["paper-job", "--data", str(cache), "--out", str(out), "--preset", "smoke", "--epochs", "1", "--n-samples", "8",
            "--work-dir", str(work), "--runs", "2:1"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "2:1: 1 epochs" in printed and "2to1.tar" in printed
    assert sorted(p.name for p in out.iterdir()) == ["2to1.tar", "job.json"]
    assert config_lib.Config.load(work / "2to1").g_steps == 2
    assert cli.main(["paper-job-score", "--job", str(out), "--data", str(cache), "--n", "8", "--features", "domain"]) == 0
    printed = capsys.readouterr().out
    assert "domain features, n = 8" in printed and "2:1" in printed and "floor" in printed
    assert (tmp_path / "out-runs" / "scores.json").is_file()


def test_bad_command_lines_are_one_line_errors(cache, tmp_path, capsys):
    assert cli.main(["paper-job", "--data", str(cache), "--out", str(tmp_path / "o"), "--runs", "3:2"]) == 2
    one_line_error(capsys, "unknown run '3:2'", "G:1")
    assert not (tmp_path / "o").exists()
    assert cli.main(["paper-job-score", "--job", str(tmp_path)]) == 2
    one_line_error(capsys, "job.json does not exist")
    assert cli.main(["paper-job", "--data", str(cache), "--out", str(tmp_path / "o"), "--n-samples", "5000"]) == 2
    one_line_error(capsys, "n_samples must be in [8, 700]")
    assert not (tmp_path / "o").exists()


def test_script_paper_rejects_bad_arguments_with_usage(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    for args in (("paper", tmp_path), ("paper", tmp_path, tmp_path / "o", "--runs"), ("paper", tmp_path, tmp_path / "o", "--bogus"),
                 ("paper", tmp_path, tmp_path / "o", "stray"), ("paper", tmp_path / "nowhere", tmp_path / "o")):
        done = subprocess.run(["bash", SCRIPT, *map(str, args)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "usage: tools/gpu_run.sh" in done.stderr and "tools/gpu_run.sh paper" in done.stderr, args
    assert not (tmp_path / "o").exists()
