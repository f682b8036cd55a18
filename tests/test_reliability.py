"""Reliability: crash-safe checkpoints (atomic writes, all-or-nothing loads, fallback past damaged files)
and a kill test: training killed with SIGKILL at seeded random moments, several during a checkpoint
write, and resumed each time."""
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from conftest import assert_same_state, make_blobs

from covgan_utils import checkpoints, cli, config, runs
from covgan_utils.checkpoints import CorruptCheckpointError, CorruptCheckpointWarning
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import loop
from covgan_utils.util import paths

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A smoke run of 3 epochs: checkpoint-000002.npz and checkpoint-000003.npz (keep 2)."""
    cfg = config.get_preset("smoke", epochs=3, ema_decay=0.9)
    return loop.train(cfg, tmp_path_factory.mktemp("base") / "run", images=make_blobs(), verbose=False)


@pytest.fixture
def run(base_run, tmp_path):
    """A fresh copy of `base_run` to damage."""
    return pathlib.Path(shutil.copytree(base_run, tmp_path / "run"))


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _epochs(path):
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def _weights(model):
    return [np.array(v.numpy()) for v in model.variables]


# ---------------------------------------------------------------- fallback on resume

def test_resume_skips_a_truncated_newest_checkpoint_and_continues_exactly(run, base_run, tmp_path):
    _truncate(run / "checkpoint-000003.npz")
    cfg = config.Config.load(run).replace(epochs=4)
    with pytest.warns(CorruptCheckpointWarning, match="checkpoint-000003.npz"):
        loop.train(cfg, run, images=make_blobs(), resume=True, verbose=False)
    assert (run / "checkpoint-000003.npz.corrupt").is_file()  # set aside, no longer a checkpoint
    assert [p.name for p in checkpoints.numbered(run)] == ["checkpoint-000003.npz", "checkpoint-000004.npz"]
    assert _epochs(run / "stats.jsonl") == [1, 2, 3, 4]
    # epoch 3 was trained again from checkpoint 2: the same state as resuming from the intact checkpoint 3
    reference = loop.train(cfg, shutil.copytree(base_run, tmp_path / "reference"), images=make_blobs(), resume=True, verbose=False)
    with np.load(run / "checkpoint-000004.npz") as a, np.load(reference / "checkpoint-000004.npz") as b:
        assert a.files == b.files
        for key in a.files:
            assert_same_state(a[key], b[key], key)


def test_resume_skips_a_zero_byte_checkpoint(run):
    (run / "checkpoint-000003.npz").write_bytes(b"")
    with pytest.warns(CorruptCheckpointWarning, match=r"checkpoint-000003\.npz.*empty file"):
        loop.train(config.Config.load(run), run, images=make_blobs(), resume=True, verbose=False)
    assert _epochs(run / "stats.jsonl") == [1, 2, 3]
    assert checkpoints.latest_checkpoint(run).name == "checkpoint-000003.npz"


def test_no_loadable_checkpoint_is_a_one_line_error_naming_the_run(run):
    _truncate(run / "checkpoint-000003.npz")
    (run / "checkpoint-000002.npz").write_bytes(b"not a zip file at all")
    with pytest.warns(CorruptCheckpointWarning), pytest.raises(ValueError) as err:
        loop.train(config.Config.load(run), run, images=make_blobs(), resume=True, verbose=False)
    message = str(err.value)
    assert "\n" not in message and str(run) in message and "start a new run folder" in message
    assert len(checkpoints.numbered(run)) == 2  # nothing renamed or deleted when nothing loads


@pytest.mark.parametrize("damage", ["shape", "missing", "bitflip"])
def test_a_damaged_checkpoint_assigns_nothing(run, tmp_path, damage):
    gan = gan_lib.GAN(config.Config.load(run))
    gan.compile()
    groups = gan.state_groups()
    before = {g: [np.array(v.numpy()) for v in vs] for g, vs in groups.items()}
    good = run / "checkpoint-000003.npz"
    bad = tmp_path / "checkpoint-000009.npz"
    if damage == "bitflip":  # a flipped byte in the middle of the largest array: the zip CRC check fails
        data = bytearray(good.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bad.write_bytes(bytes(data))
    else:
        arrays = checkpoints.read_arrays(good)
        last = list(groups)[-1]  # the last group checked: every other group would already have fitted
        keys = sorted(k for k in arrays if k.startswith(last + "/"))
        if damage == "shape":
            arrays[keys[-1]] = np.zeros(arrays[keys[-1]].shape + (2,), arrays[keys[-1]].dtype)
        else:
            del arrays[keys[-1]]
        np.savez(bad, **arrays)
    with pytest.raises(CorruptCheckpointError, match="checkpoint-000009.npz"):
        checkpoints.load_state(bad, groups)
    for g, vs in groups.items():
        for old, var in zip(before[g], vs):
            np.testing.assert_array_equal(old, np.array(var.numpy()), err_msg=g)
    assert checkpoints.load_state(good, groups) == 3


# ---------------------------------------------------------------- sampling, best and the release

def test_sampling_latest_falls_back_with_a_warning(run):
    _truncate(run / "checkpoint-000003.npz", 0.9)
    with pytest.warns(CorruptCheckpointWarning, match="checkpoint-000003.npz"):
        generator = runs.load_generator(run, "latest")
    for a, b in zip(_weights(generator), _weights(runs.load_generator(run, 2))):
        np.testing.assert_array_equal(a, b)
    assert (run / "checkpoint-000003.npz").is_file()  # sampling never changes the run folder


def test_damaged_best_checkpoint_is_a_clear_error(run, tmp_path, capsys):
    best = run / "checkpoint-best.npz"
    shutil.copy(run / "checkpoint-000003.npz", best)
    _truncate(best)
    with pytest.raises(CorruptCheckpointError) as err:
        runs.load_generator(run, "best")
    message = str(err.value)
    assert "\n" not in message and "checkpoint-best.npz" in message and "use --checkpoint latest" in message
    assert cli.main(["sample", "--run", str(run), "--checkpoint", "best", "--n", "1", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "checkpoint-best.npz" in lines[0] and "--checkpoint latest" in lines[0]
    with pytest.raises(CorruptCheckpointError, match="another epoch"):
        (run / "checkpoint-000002.npz").write_bytes(b"")
        runs.load_generator(run, 2)


def test_damaged_release_is_a_clear_error(tmp_path):
    shutil.copy(paths.RELEASE_DIR / "config.json", tmp_path / "config.json")
    (tmp_path / runs.WEIGHTS).write_bytes((paths.RELEASE_DIR / runs.WEIGHTS).read_bytes()[:5000])
    with pytest.raises(CorruptCheckpointError) as err:
        runs.load_release(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "generator.npz" in message
    assert "git checkout models/release" in message and "--run" in message


# ---------------------------------------------------------------- temporary files

def test_temp_files_of_a_killed_write_are_never_checkpoints(run):
    stray = [run / ".checkpoint-000009.npz.4242.tmp", run / ".checkpoint-best.npz.4242.tmp"]
    for file in stray:
        file.write_bytes(b"half a checkpoint")
    assert checkpoints.latest_checkpoint(run).name == "checkpoint-000003.npz"
    assert [p.name for p in checkpoints.numbered(run)] == ["checkpoint-000002.npz", "checkpoint-000003.npz"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CorruptCheckpointWarning)
        runs.load_generator(run, "latest")
        loop.train(config.Config.load(run).replace(epochs=4), run, images=make_blobs(), resume=True, verbose=False)
    assert not any(file.exists() for file in stray)  # cleaned on resume
    assert checkpoints.latest_checkpoint(run).name == "checkpoint-000004.npz"


def test_slow_checkpoint_hook_writes_through_a_temp_file(tmp_path, monkeypatch):
    monkeypatch.setenv(checkpoints.SLOW_ENV, "0.02")
    target = checkpoints.save_arrays(tmp_path / "checkpoint-000001.npz", {"epoch": np.array(1), "g/0000": np.arange(1000.0)})
    assert checkpoints.read_arrays(target)["g/0000"].sum() == np.arange(1000.0).sum()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-000001.npz"]


# ---------------------------------------------------------------- the kill test

KILL_EPOCHS = 36  # total epochs of the killed run (the smoke preset: 40 images, batch 10, 4 steps an epoch)
KILLS = 10
WRITE_KILLS = 4  # kills aimed at a checkpoint write (the temp file seen, killed before the rename)
SLOW = 0.3  # seconds each checkpoint write is stretched over (COVGAN_TEST_SLOW_CHECKPOINT)


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _stats_epochs(run):
    file = run / "stats.jsonl"
    return _epochs(file) if file.is_file() else []


class _Training:
    """`python -m covgan_utils train ...` in a subprocess (TensorFlow), its output in files."""

    def __init__(self, run, scans, home, index, resume):
        args = [sys.executable, "-m", "covgan_utils", "train", "--preset", "smoke", "--run-dir", str(run), "--data", str(scans)]
        if resume:
            args.append("--resume")
        else:
            args += ["--set", f"epochs={KILL_EPOCHS}", "checkpoint_every=1", "keep_checkpoints=2"]
        env = dict(os.environ, KERAS_BACKEND="tensorflow", COVGAN_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="2")
        env[checkpoints.SLOW_ENV] = str(SLOW)
        self.run, self.err_file = run, home / f"stderr-{index}.txt"
        with open(home / f"stdout-{index}.txt", "wb") as out, open(self.err_file, "wb") as err:
            self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=err)
        self.temps = set()

    def stderr(self):
        return self.err_file.read_text(errors="replace")

    def poll_temps(self):
        self.temps |= {p.name for p in self.run.glob(f".checkpoint-*.{self.proc.pid}.tmp")}
        return len(self.temps)

    def wait_for(self, ready, what, timeout=120):
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"training exited ({self.proc.returncode}) before {what}:\n{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"timed out waiting for {what}")
            time.sleep(0.005)

    def kill(self):
        if self.proc.poll() is not None:
            pytest.fail(f"training finished before its kill; raise KILL_EPOCHS:\n{self.stderr()[-2000:]}")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def test_training_survives_sigkill_at_random_moments(tmp_path):
    from widget_fixtures import make_scans

    rng = random.Random(20240601)
    scans = make_scans(tmp_path / "scans", n_patients=10)
    scans_before = _snapshot(scans)
    home = tmp_path / "home"  # COVGAN_HOME: the data cache goes to home/data/processed, not the repo's
    home.mkdir()
    run = tmp_path / "run"
    modes = ["write"] * WRITE_KILLS + ["time"] * (KILLS - WRITE_KILLS)
    rng.shuffle(modes)
    gan, stats, stray = None, [], []
    for index, mode in enumerate(modes + ["finish"]):
        job = _Training(run, scans, home, index, resume=index > 0)
        start_lines = len(_stats_epochs(run))
        # every resume must succeed: training runs again (a new epoch logged, a checkpoint on disk)
        job.wait_for(lambda: job.poll_temps() >= 0 and len(_stats_epochs(run)) > start_lines and checkpoints.numbered(run), "training to run")
        assert not any(p.exists() for p in stray), "temp files of the killed write were not cleaned on resume"
        if mode == "finish":
            assert job.proc.wait(timeout=180) == 0, job.stderr()[-3000:]
            assert "CorruptCheckpointWarning" not in job.stderr()
            break
        if mode == "write":  # the k-th checkpoint write of this process: kill between temp file and rename
            k = rng.randint(2, 3)
            job.wait_for(lambda: job.poll_temps() >= k and any(run.glob(f".checkpoint-*.{job.proc.pid}.tmp")), f"checkpoint write {k}")
            time.sleep(rng.uniform(0, SLOW * 0.8))
        else:  # a random moment in the next epochs (steps, sample grid, log line, checkpoint write, pruning)
            time.sleep(rng.uniform(0, 2.0))
        job.kill()
        assert "CorruptCheckpointWarning" not in job.stderr() and "Traceback" not in job.stderr(), job.stderr()[-3000:]
        stray = list(run.glob(f".checkpoint-*.{job.proc.pid}.tmp"))
        logged = max(_stats_epochs(run), default=0)
        found = checkpoints.numbered(run)
        assert found, "no checkpoint after a kill"
        if gan is None:
            gan = gan_lib.GAN(config.Config.load(run))
            gan.compile()
        for file in found:  # every checkpoint on disk loads completely (no truncated or half-renamed file)
            assert checkpoints.load_state(file, gan.state_groups()) == checkpoints.epoch_of(file)
        newest = checkpoints.epoch_of(found[-1])
        assert 0 <= logged - newest <= 1, f"kill {index}: {logged} epochs logged but the newest checkpoint is {newest}"
        stats.append({"mode": mode, "during_write": bool(stray), "logged": logged, "checkpoint": newest, "lost": logged - newest})

    during_write = sum(s["during_write"] for s in stats)
    print(f"\nkill test: {len(stats)} kills, {during_write} during a checkpoint write, epochs lost per kill {[s['lost'] for s in stats]}, "
          f"checkpoint at each kill {[s['checkpoint'] for s in stats]}")
    assert len(stats) == KILLS and during_write >= 3
    for log in run.glob("*.jsonl"):  # continuous epochs 1..N: none missing, none repeated
        assert _epochs(log) == list(range(1, KILL_EPOCHS + 1)), log.name
    assert [checkpoints.epoch_of(p) for p in checkpoints.numbered(run)] == [KILL_EPOCHS - 1, KILL_EPOCHS]
    assert not list(run.glob(".checkpoint-*")), "temp files left at the end"
    assert _snapshot(scans) == scans_before  # the data folder is only read
