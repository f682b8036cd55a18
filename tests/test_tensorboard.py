"""TensorBoard logs in every run folder: the epoch logs, timing, learning rates, metrics and sample grids
as event files TensorBoard reads back, a resumed run continuing the steps, and no TensorFlow on the JAX path."""
import json
import os
import pathlib
import subprocess
import sys
import warnings

import pytest

from covgan_utils import config
from covgan_utils.training import loop
from covgan_utils.training import tensorboard as tensorboard_lib

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOSSES = ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "r_t", "augment_p")


def _events(run):
    """The run's TensorBoard logs as TensorBoard loads them (every event file of the folder, merged)."""
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def _stats(run):
    return [json.loads(line) for line in open(run / "stats.jsonl")]


def _assert_matches_stats(acc, run):
    rows = _stats(run)
    for key in LOSSES:
        assert _steps(acc, f"train/{key}") == [r["epoch"] for r in rows], key
        for event, row in zip(acc.Scalars(f"train/{key}"), rows):
            assert event.value == pytest.approx(row[key], abs=1e-5), (key, event.step)


def test_a_run_logs_its_epochs_to_tensorboard(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke", epochs=2), tmp_path / "run", images=blob_images, verbose=False)
    acc = _events(run)
    _assert_matches_stats(acc, run)
    assert [e.value > 0 for e in acc.Scalars("time/seconds_per_step")] == [True, True]
    assert all(e.value >= s.value * 2 for e, s in zip(acc.Scalars("time/epoch_seconds"), acc.Scalars("time/seconds_per_step")))  # 4 steps an epoch
    assert [e.value for e in acc.Scalars("lr/generator")] == pytest.approx([config.get_preset("smoke").lr_g] * 2)
    assert _steps(acc, "lr/discriminator") == [1, 2]
    grids = acc.Images("samples/grid")  # smoke writes a grid every epoch
    assert [g.step for g in grids] == [1, 2]
    assert grids[-1].encoded_image_string == (run / "samples-000002.png").read_bytes() and grids[-1].width > 128


def test_a_resumed_run_continues_the_steps_in_a_new_event_file(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=2)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, verbose=False)
    (run / "checkpoint-000002.npz").unlink()  # killed after logging epoch 2, before its checkpoint: epoch 2 runs again
    loop.train(cfg.replace(epochs=3), run, images=blob_images, resume=True, verbose=False)
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = _events(run)
    _assert_matches_stats(acc, run)  # steps [1, 2, 3], epoch 2 from the second session only
    assert [g.step for g in acc.Images("samples/grid")] == [1, 2, 3]


def test_new_metric_lines_are_logged_at_their_epoch(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke", epochs=2, metrics_every=1, metrics_features="domain"), tmp_path / "run", images=blob_images, verbose=False)
    acc = _events(run)
    for name in ("kid", "swd", "ms_ssim"):
        rows = [json.loads(line) for line in open(run / f"metric-{name}.jsonl")]
        expected = [(r["epoch"], pytest.approx(r["value"], rel=1e-6)) for r in rows]  # simple_value is a float32
        assert [(e.step, e.value) for e in acc.Scalars(f"metrics/{name}")] == expected
    assert not any(tag.startswith("train/metric_") for tag in acc.Tags()["scalars"])


def test_without_the_tensorboard_package_training_works_and_warns_once(tmp_path, blob_images, monkeypatch):
    monkeypatch.setattr(tensorboard_lib, "AVAILABLE", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = loop.train(config.get_preset("smoke", epochs=2), tmp_path / "run", images=blob_images, verbose=False)
    said = [w for w in caught if issubclass(w.category, tensorboard_lib.TensorBoardUnavailableWarning)]
    assert len(said) == 1 and "\n" not in str(said[0].message)
    assert [r["epoch"] for r in _stats(run)] == [1, 2] and not (run / "tensorboard").exists()


def test_the_writer_imports_and_writes_without_tensorflow_under_jax(tmp_path):
    pytest.importorskip("jax")
    code = (
        "import sys\n"
        "from covgan_utils.training import tensorboard as tb\n"
        "from tensorboard.compat.proto import event_pb2, summary_pb2\n"
        "from tensorboard.summary.writer.record_writer import RecordWriter\n"
        f"w = tb.EventWriter({str(tmp_path)!r}); w.scalars(1, {{'train/x': 1.5}}); w.close()\n"
        "print(tb.AVAILABLE, 'tensorflow' in sys.modules)\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["True", "False"]
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/x")] == [(1, 1.5)]
