"""Divergence guard: detect non-finite losses, blank samples, a pinned discriminator and mode collapse;
roll back to the last good checkpoint, lower the learning rates, continue, and record every trip.

With `Config.guard_watch` the guard only watches: every trip is recorded in guard.jsonl
(`"action": "recorded"`) but the run is neither rolled back, nor slowed, nor stopped, so runs compared
at equal compute keep their whole budget."""
import json
import pathlib

import keras
import numpy as np

from covgan_utils import checkpoints
from covgan_utils.metrics import quality


class DivergenceGuard(keras.callbacks.Callback):
    """Checks every epoch; on a trip: log to guard.jsonl, restore the newest checkpoint, scale the LRs, continue
    (watch-only: log, reset the streaks, continue)."""

    def __init__(self, run_dir, config, real_images, n_samples=16):
        super().__init__()
        self.run_dir, self.config = pathlib.Path(run_dir), config
        self.seeds = list(range(10_000, 10_000 + n_samples))  # fixed guard batch, apart from the grid seeds
        self.real_ms_ssim = quality.ms_ssim(real_images, pairs=64)["mean"]
        self.streak = {"discriminator pinned": 0, "collapse": 0}
        self.trips = 0
        self.offset = 0  # epochs run minus the age of the weights (grows on every rollback)

    def on_train_begin(self, logs=None):
        if not self.config.guard_watch and checkpoints.latest_checkpoint(self.run_dir) is None:  # always something to roll back to
            self.model.save_checkpoint(self.run_dir / "checkpoint-000000.npz", 0)

    def on_epoch_end(self, epoch, logs=None):
        reason = self.check(epoch + 1, logs or {})
        if reason:
            self.trip(epoch + 1, reason)

    def check(self, done, logs):
        """Name of the failure seen after epoch `done`, or None."""
        c = self.config
        losses = [logs.get("g_loss", 0.0), logs.get("d_loss", 0.0)]
        if not np.all(np.isfinite(losses)) or not all(np.isfinite(v.numpy()).all() for v in self.model.generator.trainable_variables):
            return "non-finite loss or weights"
        if done - self.offset <= c.guard_warmup:  # the warm-up restarts after a rollback to early weights
            return None
        images = self.model.sample(self.seeds)
        if quality.blank_fraction(images) > 0.5:
            return "blank samples"
        pinned = logs.get("d_acc_real", 0) >= 0.999 and logs.get("d_acc_fake", 0) >= 0.999
        diverse = quality.ms_ssim(images, pairs=32)["mean"]
        collapsed = diverse > self.real_ms_ssim + c.guard_collapse_margin
        for name, bad in (("discriminator pinned", pinned), ("collapse", collapsed)):
            self.streak[name] = self.streak[name] + 1 if bad else 0
            if self.streak[name] >= c.guard_patience:
                return f"{name} (generated MS-SSIM {diverse:.3f}, real {self.real_ms_ssim:.3f})" if name == "collapse" else name
        return None

    def trip(self, done, reason):
        self.trips += 1
        if self.config.guard_watch:
            self.record(done, reason)
        else:
            self.roll_back(done, reason)

    def record(self, done, reason):
        """Watch-only trip: log it and reset the streaks (the next trip needs `guard_patience` more bad epochs)."""
        self.streak = {k: 0 for k in self.streak}
        self.log({"epoch": done, "reason": reason, "action": "recorded", "rolled_back_to": None, "checkpoint": None})
        print(f"guard: {reason} after epoch {done}; recorded (watch only)")

    def log(self, row):
        """Append one trip to guard.jsonl, with the learning rates in force and the trip count."""
        row.update(lr_g=float(self.model.g_optimizer.learning_rate.numpy()), lr_d=float(self.model.d_optimizer.learning_rate.numpy()), trip=self.trips)
        with open(self.run_dir / "guard.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def roll_back(self, done, reason):
        """Restore the last checkpoint before the failure showed, scale the learning rates, log; stop after `guard_max_trips`."""
        c = self.config
        bad_epochs = max(self.streak.values()) or 1  # epochs the failure has been visible
        checkpoint = rollback_target(self.run_dir, done - bad_epochs)
        restored = self.model.load_checkpoint(checkpoint)
        self.offset = done - restored
        factor = c.guard_lr_factor ** self.trips  # compounds: restoring a checkpoint restores its LR
        self.model.g_optimizer.learning_rate.assign(c.lr_g * factor)
        self.model.d_optimizer.learning_rate.assign(c.lr_d * factor)
        self.streak = {k: 0 for k in self.streak}
        self.log({"epoch": done, "reason": reason, "action": "rolled back", "rolled_back_to": restored, "checkpoint": checkpoint.name})
        print(f"guard: {reason} after epoch {done}; rolled back to epoch {restored}, lr x{c.guard_lr_factor}")
        if self.trips >= c.guard_max_trips:
            print(f"guard: {self.trips} trips, stopping the run")
            self.model.stop_training = True


rollback_target = checkpoints.rollback_target
