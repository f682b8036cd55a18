"""Keras callbacks of a training run: the per-epoch log (`stats.jsonl`), fixed-seed
sample grids, the samples' blank fraction and diversity (`health.jsonl`), checkpoints, the wall-clock
budget, the progress bar, and the metrics callback (`metric-<name>.jsonl`, best checkpoint by KID).
"""
import json
import pathlib
import time

import keras
import numpy as np

from covgan_utils import checkpoints, sampling
from covgan_utils import config as config_lib
from covgan_utils.metrics import domain_encoder, quality
from covgan_utils.metrics import features as features_lib
from covgan_utils.util.files import append_jsonl

# ---------------------------------------------------------------- callbacks

class RunLogger(keras.callbacks.Callback):
    """Appends one JSON line per epoch to `stats.jsonl`."""

    def __init__(self, run_dir, images_per_epoch):
        super().__init__()
        self.file = pathlib.Path(run_dir) / "stats.jsonl"
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        row.update(seconds=round(time.time() - self.start, 3), images_seen=(epoch + 1) * self.images_per_epoch)
        with open(self.file, "a") as fh:
            fh.write(json.dumps(row) + "\n")


class SampleGrid(keras.callbacks.Callback):
    """Writes a fixed-seed sample grid `samples-<epoch:06d>.png` every `every` epochs and at the end."""

    def __init__(self, run_dir, seeds, every, last_epoch):
        super().__init__()
        self.run_dir, self.seeds, self.every, self.last_epoch = pathlib.Path(run_dir), list(seeds), every, last_epoch

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0 or done == self.last_epoch:
            sampling.save_grid(self.model.sample(self.seeds), self.run_dir / f"samples-{done:06d}.png")


class HealthLog(keras.callbacks.Callback):
    """Every `every` epochs, one line of `health.jsonl`: the blank-image fraction and the mean within-set
    MS-SSIM (higher = more alike: collapse) of the samples of fixed `seeds`, as `model.sample` shows them
    (through the run's scaling)."""

    def __init__(self, run_dir, seeds=range(10_100, 10_132), every=1, pairs=64):
        super().__init__()
        self.file, self.seeds, self.every, self.pairs = pathlib.Path(run_dir) / "health.jsonl", list(seeds), max(1, int(every)), pairs
        quality.require("ms_ssim", "seed", len(self.seeds), "pass two or more seeds")

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0:
            images = np.asarray(self.model.sample(self.seeds), np.float32)  # [n, 128, 128, 1] in [-1, 1]
            row = {"epoch": done, "blank_fraction": quality.blank_fraction(images), "ms_ssim": quality.ms_ssim(images, pairs=self.pairs)["mean"]}
            append_jsonl(self.file, {**row, "n": len(images)})


class Checkpointer(keras.callbacks.Callback):
    """Saves the training state every `every` epochs and when training ends; keeps the newest `keep`."""

    def __init__(self, run_dir, every, keep, last_epoch):
        super().__init__()
        self.run_dir, self.every, self.keep, self.last_epoch = pathlib.Path(run_dir), every, keep, last_epoch
        self.done = self.saved = None

    def on_epoch_end(self, epoch, logs=None):
        self.done = epoch + 1
        if self.done % self.every == 0 or self.done == self.last_epoch:
            self.save(self.done)

    def on_train_end(self, logs=None):
        if self.done is not None and self.saved != self.done:  # stopped early (time budget, guard)
            self.save(self.done)

    def save(self, done):
        self.saved = done
        self.model.save_checkpoint(self.run_dir / f"checkpoint-{done:06d}.npz", done)  # atomic: a kill leaves the old files
        found = [p for p in checkpoints.numbered(self.run_dir) if checkpoints.epoch_of(p) <= done]  # never the one just written
        for old in found[: -self.keep] if self.keep > 0 else []:
            old.unlink(missing_ok=True)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the first epoch that ends more than `minutes` after training started."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = minutes * 60.0

    def on_train_begin(self, logs=None):
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if time.time() - self.start >= self.seconds:
            self.model.stop_training = True


class ProgressBar(keras.callbacks.Callback):
    """One tqdm bar over epochs with the latest losses."""

    def __init__(self, initial_epoch, epochs):
        super().__init__()
        self.initial_epoch, self.epochs = initial_epoch, epochs

    def on_train_begin(self, logs=None):
        import tqdm.auto

        self.bar = tqdm.auto.tqdm(total=self.epochs, initial=self.initial_epoch, unit="epoch", desc="train")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.bar.set_postfix({k: f"{logs[k]:.3f}" for k in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake") if k in logs})
        self.bar.update(1)

    def on_train_end(self, logs=None):
        self.bar.close()


CHEAP_METRICS = ("swd", "ms_ssim", "blank_fraction", "duplicate_fraction", "kid")


class MetricsCallback(keras.callbacks.Callback):
    """Every `every` epochs: sample `n` images from fixed `seeds` and write the cheap metrics (SWD,
    MS-SSIM, blank and duplicate fractions, KID on Inception-v3 features when the [fid] extra is
    installed (`features="auto"`, the default), else or with `features="domain"` on the domain
    encoder's) as one JSON line each to
    `<run_dir>/metric-<name>.jsonl` ({"epoch": completed epochs, "value": v, ...}).

    On a new lowest KID it writes `best.json` {"epoch", "metric", "value"} and, when the model has
    `save_checkpoint(path, epoch)`, saves `checkpoint-best.npz`. Samples come from `model.sample(seeds)`
    when the model has it, else from `model.generator` on the noise of those seeds (`sampling.generate`).
    """

    def __init__(self, run_dir, real_val, real_train=None, every=5, n=200, seeds=None, ms_ssim_pairs=100, swd_per_image=128, encoder=None, features="auto"):
        super().__init__()
        if features not in config_lib.METRIC_FEATURES:
            raise ValueError(f"metric features must be 'domain', 'inception' or 'auto' (inception when installed), got {features!r}")
        self.features = features
        self.run_dir = pathlib.Path(run_dir)
        self.every = max(1, int(every))
        self.n = int(n)
        self.seeds = list(range(self.n)) if seeds is None else list(seeds)
        self.real_val = quality.subsample(quality.as_images(real_val), self.n, seed=1)
        self.real_train = None if real_train is None else quality.subsample(quality.as_images(real_train), self.n, seed=2)
        self.ms_ssim_pairs = ms_ssim_pairs
        self.swd_per_image = swd_per_image
        self._encoder = encoder  # a domain encoder model to use instead of the committed one
        self._extract = None
        self._real_features = None
        self.best = None
        best_file = self.run_dir / "best.json"
        if best_file.is_file():  # a resumed run keeps its best so far
            self.best = json.loads(best_file.read_text()).get("value")

    def _features(self, images):
        """Features of `images`; the extractor is chosen on first use ("auto": Inception when installed)."""
        if self._extract is None:
            if self._encoder is not None and self.features == "domain":
                model = self._encoder
                self.features, self._extract = "domain", lambda x: domain_encoder.embed(model, x)
            else:  # inception: texture-sensitive (docs/RESULTS.md, calibration), ~0.35 CPU-s per image
                self.features, self._extract = features_lib.feature_extractor(self.features)
        return self._extract(images)

    def sample(self):
        model = self.model
        if hasattr(model, "sample"):
            return np.asarray(model.sample(self.seeds), np.float32)
        return sampling.generate(model.generator, self.seeds)

    def evaluate(self, epoch):
        """Compute and record the cheap metrics after `epoch` completed epochs -> {name: value}."""
        started = time.time()
        images = self.sample()
        if self._real_features is None:
            self._real_features = self._features(self.real_val)
        gen_f = self._features(images)
        s = quality.swd(images, self.real_val, per_image=self.swd_per_image)
        k = quality.kid(gen_f, self._real_features)
        values = {
            "swd": (s["mean"], {"levels": s["levels"]}),
            "ms_ssim": (quality.ms_ssim(images, pairs=self.ms_ssim_pairs)["mean"], {}),
            "blank_fraction": (quality.blank_fraction(images), {}),
            "duplicate_fraction": (quality.duplicate_fraction(images), {}),
            "kid": (k["mean"], {"std": k["std"], "features": self.features}),
        }
        self.run_dir.mkdir(parents=True, exist_ok=True)
        seconds = round(time.time() - started, 2)
        for name, (value, extra) in values.items():
            append_jsonl(self.run_dir / f"metric-{name}.jsonl", {"epoch": int(epoch), "value": float(value), "n": len(images), **extra, "seconds": seconds})
        kid_value = values["kid"][0]
        if self.best is None or kid_value < self.best:
            self.best = kid_value
            (self.run_dir / "best.json").write_text(json.dumps({"epoch": int(epoch), "metric": "kid", "features": self.features, "value": float(kid_value)}) + "\n")
            if hasattr(self.model, "save_checkpoint"):
                self.model.save_checkpoint(self.run_dir / "checkpoint-best.npz", epoch)
        return {name: v for name, (v, _) in values.items()}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0:
            result = self.evaluate(done)
            if logs is not None:
                logs.update({f"metric_{k}": v for k, v in result.items()})
