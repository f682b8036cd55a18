"""Metric tracking during training: a Keras callback writing `metric-<name>.jsonl` into the run folder,
marking the best checkpoint by KID, and `plot_metric_curves` to draw those files."""
import json
import pathlib
import time

import keras
import numpy as np

from covgan_utils import encoder, images, scores

CHEAP_METRICS = ("swd", "ms_ssim", "blank_fraction", "duplicate_fraction", "kid")


def append_jsonl(file, record):
    with open(file, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(file):
    lines = pathlib.Path(file).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


class MetricsCallback(keras.callbacks.Callback):
    """Every `every` epochs: sample `n` images from fixed `seeds` and write the cheap metrics (SWD,
    MS-SSIM, blank and duplicate fractions, KID on Inception-v3 features when the [fid] extra is
    installed (`features="auto"`, the default), else or with `features="domain"` on the domain
    encoder's) as one JSON line each to
    `<run_dir>/metric-<name>.jsonl` ({"epoch": completed epochs, "value": v, ...}).

    On a new lowest KID it writes `best.json` {"epoch", "metric", "value"} and, when the model has
    `save_checkpoint(path, epoch)`, saves `checkpoint-best.npz`. Samples come from `model.sample(seeds)`
    when the model has it, else from `model.generator` on the noise of those seeds (`images.generate`).
    """

    def __init__(self, run_dir, real_val, real_train=None, every=5, n=200, seeds=None, ms_ssim_pairs=100, swd_per_image=128, encoder=None, features="auto"):
        super().__init__()
        if features not in ("domain", "inception", "auto"):
            raise ValueError(f"metric features must be 'domain', 'inception' or 'auto' (inception when installed), got {features!r}")
        self.features = features
        self.run_dir = pathlib.Path(run_dir)
        self.every = max(1, int(every))
        self.n = int(n)
        self.seeds = list(range(self.n)) if seeds is None else list(seeds)
        self.real_val = scores.subsample(scores.as_images(real_val), self.n, seed=1)
        self.real_train = None if real_train is None else scores.subsample(scores.as_images(real_train), self.n, seed=2)
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
                self.features, self._extract = "domain", lambda x: encoder.embed(model, x)
            else:  # inception: texture-sensitive (docs/RESULTS.md, calibration), ~0.35 CPU-s per image
                self.features, self._extract = scores.feature_extractor(self.features)
        return self._extract(images)

    def sample(self):
        model = self.model
        if hasattr(model, "sample"):
            return np.asarray(model.sample(self.seeds), np.float32)
        return images.generate(model.generator, self.seeds)

    def evaluate(self, epoch):
        """Compute and record the cheap metrics after `epoch` completed epochs -> {name: value}."""
        started = time.time()
        images = self.sample()
        if self._real_features is None:
            self._real_features = self._features(self.real_val)
        gen_f = self._features(images)
        s = scores.swd(images, self.real_val, per_image=self.swd_per_image)
        k = scores.kid(gen_f, self._real_features)
        values = {
            "swd": (s["mean"], {"levels": s["levels"]}),
            "ms_ssim": (scores.ms_ssim(images, pairs=self.ms_ssim_pairs)["mean"], {}),
            "blank_fraction": (scores.blank_fraction(images), {}),
            "duplicate_fraction": (scores.duplicate_fraction(images), {}),
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


def plot_metric_curves(run_dir):
    """Figure with one panel per `metric-*.jsonl` file in `run_dir` (value against epoch; the best
    epoch from best.json is marked)."""
    import matplotlib.pyplot as plt

    run_dir = pathlib.Path(run_dir)
    files = sorted(run_dir.glob("metric-*.jsonl"))
    best = json.loads((run_dir / "best.json").read_text()) if (run_dir / "best.json").is_file() else None
    if not files:
        fig, ax = plt.subplots(figsize=(4, 2))
        ax.text(0.5, 0.5, f"no metric-*.jsonl in {run_dir.name}", ha="center", va="center")
        ax.axis("off")
        return fig
    cols = min(3, len(files))
    rows = (len(files) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, file in zip(axes.ravel(), files):
        name = file.stem[len("metric-"):]
        records = read_jsonl(file)
        epochs = [r["epoch"] for r in records]
        values = [r["value"] for r in records]
        ax.plot(epochs, values, marker="o", ms=3)
        if "std" in (records[0] if records else {}):
            std = np.array([r["std"] for r in records])
            ax.fill_between(epochs, np.array(values) - std, np.array(values) + std, alpha=0.25)
        if best is not None:
            ax.axvline(best["epoch"], color="gray", ls="--", lw=1)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    for ax in axes.ravel()[len(files):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
