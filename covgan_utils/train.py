"""GAN training on TensorFlow or JAX: `GAN` (models, optimizers, state, checkpoints), the training loop
with Keras callbacks, run folders, resume, and `train(config, run_dir)`.

The backend is Keras's (`KERAS_BACKEND=tensorflow`, the default, or `jax`); nothing here imports
TensorFlow. The gradient step for each backend is in `covgan_utils.steps`; run folders and
checkpoints are the same on both, so a run started under one resumes under the other.
"""
import fcntl
import json
import pathlib
import random
import re
import time

import keras
import numpy as np

from covgan_utils import augment as augment_lib
from covgan_utils import checkpoints, files, guard, losses, models, paths, steps, tracking
from covgan_utils import config as config_lib
from covgan_utils import data as data_lib
from covgan_utils import images as images_lib
from covgan_utils.checkpoints import CHECKPOINT_RE, assign_group, latest_checkpoint  # noqa: F401  (public here too)

LOSSES = losses.LOSSES
EMA_STATS_SEED = 20_000  # noise seeds EMA_STATS_SEED.. re-estimate the EMA generator's BatchNorm statistics


class GAN(keras.Model):
    """Generator + discriminator (+ EMA generator), their optimizers, the augmentation probability and the
    training seed generator: everything a checkpoint holds. One training step = one D update and
    `g_steps` G updates (`covgan_utils.steps`)."""

    def __init__(self, config, **kwargs):
        super().__init__(name="gan", **kwargs)
        if config.loss not in LOSSES:
            raise ValueError(f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
        if config.g_steps < 1:
            raise ValueError(f"g_steps must be >= 1, got {config.g_steps}")
        self.config = config
        self.generator = build_generator(config)
        self.discriminator = models.discriminator_for(config)
        self.ema_generator = build_generator(config, name="ema_generator") if config.ema_decay > 0 else None
        if self.ema_generator is not None:
            self.ema_generator.set_weights(self.generator.get_weights())
        self.policy = augment_lib.parse_policy(config.augment)
        start_p = 0.0 if config.ada_target > 0 else config.augment_p
        self.augment_p = keras.Variable(start_p, trainable=False, dtype="float32", name="augment_p")
        self.seed_generator = keras.random.SeedGenerator(config.seed, name="train_seed")
        self.stop_training = False

    def compile(self, **kwargs):
        c = self.config
        self.d_optimizer = keras.optimizers.Adam(c.lr_d, beta_1=c.beta_1, beta_2=c.beta_2, name="d_adam")
        self.g_optimizer = keras.optimizers.Adam(c.lr_g, beta_1=c.beta_1, beta_2=c.beta_2, name="g_adam")
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        super().compile(**kwargs)

    def sample(self, seeds, batch_size=64):
        """Images [N, 128, 128, 1] in [-1, 1] for integer seeds, from the EMA generator when there is one."""
        return images_lib.generate(self.ema_generator or self.generator, seeds, batch_size)

    def refresh_ema_batchnorm(self, n=256):
        """Set the EMA generator's BatchNorm moving statistics to those of its own activations on fixed noise.

        The averaged weights never ran in training mode, so the live generator's statistics do not fit
        them: early in training the EMA samples came out flat and alike (within-set MS-SSIM 0.77 vs
        0.18 after re-estimation, 5 epochs of the `best` recipe).
        """
        layers = [layer for layer in (self.ema_generator.layers if self.ema_generator else []) if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            return
        z = images_lib.noise_for_seeds(range(EMA_STATS_SEED, EMA_STATS_SEED + n), self.config.latent_dim)  # [n, latent]
        labels = (np.arange(n) % max(models.class_count(self.config), 1))[:, None].astype(np.int32)  # [n, 1] every class alike
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.momentum = 0.0  # one training-mode pass then stores the exact batch statistics
        try:
            self.ema_generator(steps.with_label(z, labels if self.config.conditional else None), training=True)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    # ------------------------------------------------------------ checkpoints
    def state_groups(self):
        """Named groups of every variable that defines the training state (weights, BN stats, RNG, optimizers)."""
        groups = {
            "g": self.generator.variables,
            "d": self.discriminator.variables,
            "g_opt": self.g_optimizer.variables,
            "d_opt": self.d_optimizer.variables,
            "misc": [self.augment_p],
            "rng": [self.seed_generator.state],
        }
        if self.ema_generator is not None:
            groups["ema"] = self.ema_generator.variables
        return groups

    def save_checkpoint(self, path, epoch):
        """Write the whole training state to an .npz (plain arrays: loading never runs code), atomically."""
        arrays = {"epoch": np.array(epoch), "backend": np.array(keras.backend.backend())}
        for group, variables in self.state_groups().items():
            arrays.update(checkpoints.to_arrays(group, variables))
        checkpoints.save_arrays(path, arrays)

    def load_checkpoint(self, path):
        """Restore the state written by `save_checkpoint` (under either backend), all or nothing; returns its epoch."""
        return checkpoints.load_state(path, self.state_groups())

    # ------------------------------------------------------------ the loop
    def stepper(self):
        """The backend's step object (`covgan_utils.steps`), made once per GAN."""
        if getattr(self, "_stepper", None) is None:
            self._stepper = steps.make_step(self)
        return self._stepper

    def d_steps_done(self):
        """Discriminator updates so far (the optimizer's step counter: lazy R1 is due on multiples of r1_every)."""
        return int(np.asarray(self.d_optimizer.iterations.numpy()))

    def train_step(self, real):
        """One training step on a batch [B, 128, 128, 1], its state written back into the variables -> logs."""
        step = self.stepper()
        step.load()
        logs = step(real, losses.r1_is_due(self.config, self.d_steps_done()))
        step.store()
        return logs

    def run_epochs(self, batches, initial_epoch, epochs, callbacks=()):
        """Train epochs [initial_epoch, epochs) on `batches(epoch)` (an iterable of [B, 128, 128, 1] arrays),
        calling Keras callbacks as `fit` does; returns the last epoch's logs."""
        step = self.stepper()
        cbs = keras.callbacks.CallbackList(list(callbacks), model=self)
        batch_hooks = any(type(cb).on_train_batch_end is not keras.callbacks.Callback.on_train_batch_end for cb in callbacks)
        self.stop_training, logs = False, {}
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            step.load()
            d_step = self.d_steps_done()
            history = []
            for index, real in enumerate(batches(epoch)):
                history.append(step(real, losses.r1_is_due(self.config, d_step)))
                d_step += 1
                if batch_hooks:  # a callback may read or change the variables mid-epoch
                    step.store()
                    cbs.on_train_batch_end(index, {k: float(v) for k, v in history[-1].items()})
                    step.load()
            step.store()
            logs = {k: float(np.mean([float(h[k]) for h in history])) for k in (history[0] if history else {})}
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return logs


def build_generator(config, name=None):
    """The generator described by `config` (any family, `models.generator_for`)."""
    return models.generator_for(config, name)


def load_run_generator(run_dir, checkpoint="latest"):
    """Generator of a run folder at one of its checkpoints (EMA weights when trained with EMA).
    "latest" skips damaged checkpoints (`checkpoints.CorruptCheckpointWarning`) for the previous one;
    a damaged "best", epoch or file raises a one-line `checkpoints.CorruptCheckpointError`."""
    return read_run_generator(run_dir, checkpoint)[0]


def read_run_generator(run_dir, checkpoint="latest"):
    """(generator, source) as `load_run_generator`; source = {"checkpoint": file name, "epoch", "weights"}
    of the checkpoint actually loaded."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    generator = build_generator(config_lib.Config.load(run_dir))

    def load(file):  # whole file read and checked before anything is assigned
        arrays = checkpoints.read_arrays(file)
        group = "ema" if any(k.startswith("ema/") for k in arrays) else "g"
        checkpoints.load_groups(file, {group: generator.variables}, arrays)
        epoch = int(arrays["epoch"]) if "epoch" in arrays else None
        return {"checkpoint": file.name, "epoch": epoch, "weights": "EMA generator" if group == "ema" else "generator"}

    if checkpoint == "latest":
        return generator, checkpoints.load_newest(run_dir, load)[1]
    file = checkpoints.checkpoint_file(run_dir, checkpoint)
    try:
        return generator, load(file)
    except checkpoints.CorruptCheckpointError as err:
        fix = "use --checkpoint latest" if checkpoint == "best" else "use --checkpoint latest or another epoch"
        raise err.with_fix(fix) from None


def seed_everything(seed):
    """Python, NumPy and backend seeds (initial weights and layer seed generators follow them).
    Under JAX this leaves TensorFlow unimported (`keras.utils.set_random_seed` would import it)."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------- run folders

def new_run_dir(preset, root=None):
    """Create `root/<NNNNN>-<preset>/` with the next free number; trainings started at once get distinct numbers."""
    root = pathlib.Path(root or paths.MODELS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".run-numbers.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # numbering is read-then-create: one process at a time
        numbers = [int(p.name.split("-", 1)[0]) for p in root.iterdir() if re.match(r"\d{5}-", p.name)]
        run_dir = root / f"{max(numbers, default=-1) + 1:05d}-{preset}"
        run_dir.mkdir()
    return run_dir


def truncate_jsonl(run_dir, epoch):
    """Drop lines with epoch > `epoch` from every *.jsonl log in `run_dir` (used on resume)."""
    for file in pathlib.Path(run_dir).glob("*.jsonl"):
        lines = [ln for ln in file.read_text().splitlines() if ln.strip() and json.loads(ln).get("epoch", 0) <= epoch]
        files.write_text_atomic(file, "".join(ln + "\n" for ln in lines))


# ---------------------------------------------------------------- callbacks

class EMABatchNorm(keras.callbacks.Callback):
    """Re-estimates the EMA generator's BatchNorm statistics at every epoch end, before anything samples or saves."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.refresh_ema_batchnorm()


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
            images_lib.save_grid(self.model.sample(self.seeds), self.run_dir / f"samples-{done:06d}.png")


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


# ---------------------------------------------------------------- data pipeline

def epoch_batches(images, batch_size, seed, epoch, labels=None):
    """Batches [B, 128, 128, 1] of one epoch (with labels: (images, labels [B, 1] int32) pairs): a
    permutation fixed by (seed, epoch), full batches only. Plain NumPy, the same under every backend."""
    n = len(images)
    if n < batch_size:
        raise ValueError(f"batch size {batch_size} is larger than the {n} training images")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
    for start in range(0, n - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield images[index] if labels is None else (images[index], labels[index, None].astype(np.int32))


def training_split(config, data_dir=None):
    """(train images, train labels, val images, val labels) for `config`: the shared patient-level split,
    then the `max_images` cap; labels are int32 indices into `config.classes`."""
    train_ds, val_ds = data_lib.load_split(data_dir, config.classes, config.flip, config.val_fraction, config.split_seed)
    index = {name: i for i, name in enumerate(config.classes)}
    train, train_labels = train_ds.images, np.array([index[c] for c in train_ds.classes], np.int32)
    if config.max_images:
        keep = np.random.RandomState(config.seed).permutation(len(train))[: config.max_images]
        train, train_labels = train[keep], train_labels[keep]
    return train, train_labels, val_ds.images, np.array([index[c] for c in val_ds.classes], np.int32)


def training_images(config, data_dir=None):
    """(train images, val images) that samples are compared with: every class of `config.classes`, or for
    a conditional model the first class (its default when sampling; COVID in the shipped presets)."""
    train, train_labels, val, val_labels = training_split(config, data_dir)
    if config.conditional:
        return train[train_labels == 0], val[val_labels == 0]
    return train, val


# ---------------------------------------------------------------- the job

def train(config, run_dir=None, data_dir=None, resume=False, callbacks=(), images=None, verbose=True, labels=None):
    """Train `config` in `run_dir` (a new `models/<NNNNN>-<preset>/` when None); returns the run folder.

    `resume=True` continues from the newest checkpoint in `run_dir`: epoch counter, weights, optimizer
    state, augmentation and noise streams, so the result equals an uninterrupted run; `epochs` and
    `time_budget_minutes` come from `config`, everything else from the run's config.json. `images`
    (and, for a conditional config, `labels` [N] class indices) override the data (tests).
    """
    run_dir = _prepare_run_dir(config, run_dir, resume)
    if resume:
        config = _resumable_config(config, run_dir)
    config.save(run_dir)
    if images is None:
        images, labels, val_images, val_labels = training_split(config, data_dir)
    else:
        val_images, val_labels = images, None
    if config.conditional:
        labels = _checked_labels(config, images, labels)
        val_labels = labels if val_labels is None else val_labels
        compared = (images[labels == 0], val_images[val_labels == 0])  # samples default to class 0: compare with class 0
    else:
        labels, compared = None, (images, val_images)
    seed_everything(config.seed)  # initial weights and dropout streams follow the seed
    gan = GAN(config)
    gan.compile()
    initial_epoch = 0
    if resume:
        checkpoints.remove_temp_files(run_dir)  # left by a write that was killed: never a checkpoint
        if latest_checkpoint(run_dir) is None:
            raise ValueError(f"nothing to resume: no checkpoint-*.npz in {run_dir}")
        # newest checkpoint that loads (all or nothing); damaged newer ones are skipped with a warning
        ckpt, initial_epoch, skipped = checkpoints.load_newest(run_dir, gan.load_checkpoint)
        for path in skipped:  # training goes on from `ckpt`: the damaged files must not count as newer checkpoints
            checkpoints.set_aside(path)
        truncate_jsonl(run_dir, initial_epoch)
    if initial_epoch >= config.epochs:
        return run_dir
    steps_per_epoch = len(images) // config.batch_size
    all_callbacks = _callbacks(config, run_dir, gan, *compared, steps_per_epoch, initial_epoch, verbose) + list(callbacks)
    images = np.asarray(images, np.float32)
    gan.run_epochs(lambda epoch: epoch_batches(images, config.batch_size, config.seed, epoch, labels), initial_epoch, config.epochs, all_callbacks)
    return run_dir


def _checked_labels(config, images, labels):
    """Class indices [N] int32 for a conditional run, checked against `config.classes`."""
    if labels is None:
        raise ValueError("a conditional config needs class labels for its images (pass labels=, or let train() load the data)")
    k = len(config.classes)
    if k < 2:
        raise ValueError(f"conditional=true needs two or more classes, got classes={list(config.classes)}; set classes=CT_COVID,CT_NonCOVID")
    labels = np.asarray(labels).astype(np.int32).reshape(-1)
    if len(labels) != len(images) or labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels must be {len(images)} class indices in [0, {k - 1}] (config.classes = {list(config.classes)})")
    return labels


MODEL_FIELDS = (
    "arch", "latent_dim", "g_base_width", "g_widths", "d_widths", "upsample", "g_block_convs", "g_out_kernel", "spectral_norm",
    "g_noise", "w_dim", "mapping_layers", "mbstd_group", "conditional", "classes",
)


def _resumable_config(requested, run_dir):
    """The run's own config.json with the requested `epochs` and time budget; refuses a run of another
    preset or architecture, naming both."""
    saved = config_lib.Config.load(run_dir)
    differ = [f for f in ("preset",) + MODEL_FIELDS if getattr(saved, f) != getattr(requested, f)]
    if differ:
        pairs = ", ".join(f"{f} {getattr(saved, f)!r} (asked: {getattr(requested, f)!r})" for f in differ)
        raise ValueError(f"--resume: {run_dir} holds a run with {pairs}; resume it with --preset {saved.preset} or train into another folder")
    return saved.replace(epochs=requested.epochs, time_budget_minutes=requested.time_budget_minutes)


def _prepare_run_dir(config, run_dir, resume):
    if resume:
        run_dir = pathlib.Path(run_dir) if run_dir else latest_run(config.preset)
        if run_dir is None or not run_dir.is_dir():
            raise ValueError(f"nothing to resume: no run folder {run_dir or 'for preset ' + config.preset}")
        return run_dir
    if run_dir is None:
        return new_run_dir(config.preset)
    run_dir = pathlib.Path(run_dir)
    if run_dir.is_dir() and latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _callbacks(config, run_dir, gan, images, val_images, steps, initial_epoch, verbose):
    out = [RunLogger(run_dir, steps * config.batch_size)]
    if config.ema_decay > 0:
        out.insert(0, EMABatchNorm())
    if config.time_budget_minutes:
        out.append(TimeBudget(config.time_budget_minutes))
    if config.guard:
        out.append(guard.DivergenceGuard(run_dir, config, images))
    if config.metrics_every:
        out.append(tracking.MetricsCallback(run_dir, val_images, images, every=config.metrics_every, features=config.metrics_features))
    out += [
        SampleGrid(run_dir, range(config.grid_seeds), config.sample_every, config.epochs),
        Checkpointer(run_dir, config.checkpoint_every, config.keep_checkpoints, config.epochs),
    ]
    if verbose:
        out.append(ProgressBar(initial_epoch, config.epochs))
    return out


def latest_run(preset=None, root=None):
    """Newest GAN run folder `models/<NNNNN>-<preset>/` (any preset when None; autoencoder runs excluded), or None."""
    root = pathlib.Path(root or paths.MODELS_DIR)
    if not root.is_dir():
        return None
    runs = sorted(
        p for p in root.iterdir()
        if p.is_dir() and re.match(r"\d{5}-", p.name) and "autoencoder" not in p.name
        and (preset is None or p.name.split("-", 1)[1] == preset)
    )
    return runs[-1] if runs else None


# ---------------------------------------------------------------- CLI

def _cli_train(args):
    pairs = (("epochs", args.epochs), ("seed", args.seed), ("time_budget_minutes", args.minutes))
    overrides = {k: v for k, v in pairs if v is not None}
    if args.set and args.resume:
        raise ValueError("--set cannot change a run being resumed; its config.json is kept")
    if args.resume and args.run_dir and (pathlib.Path(args.run_dir) / "config.json").is_file():
        saved = config_lib.Config.load(args.run_dir)  # resume asks for the run's own config (its --set changes too)
        config = saved.replace(preset=args.preset or saved.preset, **{"time_budget_minutes": 0.0, **overrides})  # --minutes: this invocation's
    else:
        config = config_lib.get_preset(args.preset or config_lib.default_preset(), **overrides).with_overrides(args.set)
    run_dir = train(config, args.run_dir, data_dir=args.data, resume=args.resume)
    print(run_dir)
