import json

import keras
import numpy as np
import pytest

from covgan_utils import checkpoints, config
from covgan_utils.nets import families
from covgan_utils.training import guard, loop


class Inject(keras.callbacks.Callback):
    """Breaks the model during one epoch (1-based `at`) with `action(gan)` after every batch."""

    def __init__(self, at, action):
        super().__init__()
        self.at, self.action, self.epoch = {at} if isinstance(at, int) else set(at), action, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch in self.at:
            self.action(self.model)


def _nan(gan):
    w = gan.discriminator.get_layer("logit").kernel
    w.assign(np.full(w.shape, np.nan, np.float32))


def _collapse(gan):  # the noise is ignored: every seed gives the same textured image
    w = gan.generator.get_layer("project").kernel
    w.assign(np.zeros(w.shape, np.float32))
    beta = gan.generator.get_layer("project_bn").beta
    beta.assign(np.random.RandomState(0).randn(*beta.shape).astype(np.float32) * 3)


@pytest.mark.parametrize("action, reason, warmup", [(_nan, "non-finite", 4), (_collapse, "collapse", 1)])
def test_guard_trips_rolls_back_and_training_continues(tmp_path, blob_images, action, reason, warmup):
    cfg = config.get_preset(
        "smoke", epochs=4, guard=True, guard_warmup=warmup, guard_patience=1, g_base_width=64, g_widths=(32, 16, 16, 8, 8)
    )
    run = loop.train(cfg, tmp_path / "run", images=blob_images, callbacks=[Inject(2, action)], verbose=False)
    trips = [json.loads(line) for line in open(run / "guard.jsonl")]
    assert trips[0]["epoch"] == 2 and reason in trips[0]["reason"] and trips[0]["rolled_back_to"] == 1
    assert trips[0]["action"] == "rolled back"
    assert trips[0]["lr_g"] == pytest.approx(cfg.lr_g * cfg.guard_lr_factor)
    assert [json.loads(line)["epoch"] for line in open(run / "stats.jsonl")] == [1, 2, 3, 4]  # it went on
    final = np.load(run / "checkpoint-000004.npz")
    assert all(np.isfinite(final[k]).all() for k in final.files if final[k].dtype.kind == "f")
    g = families.generator_for(cfg)
    checkpoints.assign_group(g.variables, final, "g", "final")
    assert np.abs(g.get_layer("project").kernel.numpy()).sum() > 0  # no longer broken


def test_repeated_trips_compound_the_learning_rate_cut(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=4, guard=True, guard_warmup=10)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, callbacks=[Inject([2, 3], _nan)], verbose=False)
    trips = [json.loads(line) for line in open(run / "guard.jsonl")]
    assert [t["epoch"] for t in trips] == [2, 3]
    assert [t["rolled_back_to"] for t in trips] == [1, 2]  # checkpoint 2 holds the weights restored after the first trip
    assert [t["lr_g"] for t in trips] == pytest.approx([cfg.lr_g * 0.5, cfg.lr_g * 0.25])


def test_rollback_skips_checkpoints_saved_while_the_failure_was_visible(tmp_path):

    for epoch in (0, 10, 20):
        (tmp_path / f"checkpoint-{epoch:06d}.npz").write_bytes(b"")
    assert guard.rollback_target(tmp_path, 19).name == "checkpoint-000010.npz"
    assert guard.rollback_target(tmp_path, 20).name == "checkpoint-000020.npz"
    (tmp_path / "checkpoint-000000.npz").unlink()
    assert guard.rollback_target(tmp_path, 5).name == "checkpoint-000010.npz"  # nothing older kept: the oldest
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        guard.rollback_target(tmp_path / "missing", 5)


def test_watch_only_records_every_trip_but_neither_rolls_back_nor_stops(tmp_path, blob_images):
    cfg = config.get_preset(
        "smoke", epochs=5, guard=True, guard_watch=True, guard_warmup=1, guard_patience=2, guard_max_trips=1,
        g_base_width=64, g_widths=(32, 16, 16, 8, 8),
    )
    run = loop.train(cfg, tmp_path / "run", images=blob_images, callbacks=[Inject([2, 3, 4, 5], _collapse)], verbose=False)
    trips = [json.loads(line) for line in open(run / "guard.jsonl")]
    assert [t["epoch"] for t in trips] == [3, 5]  # the streak starts again after each recorded trip
    assert all("collapse" in t["reason"] and "MS-SSIM" in t["reason"] for t in trips)
    assert {t["action"] for t in trips} == {"recorded"} and {t["rolled_back_to"] for t in trips} == {None}
    assert [t["lr_g"] for t in trips] == pytest.approx([cfg.lr_g] * 2)  # the learning rates are left alone
    assert [json.loads(line)["epoch"] for line in open(run / "stats.jsonl")] == [1, 2, 3, 4, 5]  # past guard_max_trips
    g = families.generator_for(cfg)
    checkpoints.assign_group(g.variables, np.load(run / "checkpoint-000005.npz"), "g", "final")
    assert np.abs(g.get_layer("project").kernel.numpy()).sum() == 0  # the broken weights were kept: no rollback
