"""GAN training: `GAN(keras.Model)` with `train_step`, run folders, checkpoints, resume, and `train(config, run_dir)`."""
import json
import pathlib
import re
import time

import keras
import numpy as np
import tensorflow as tf

from covgan_utils import augment as augment_lib
from covgan_utils import config as config_lib
from covgan_utils import data as data_lib
from covgan_utils import models, paths
from covgan_utils import sample as sample_lib

LOSSES = ("bce", "non-saturating", "hinge", "wgan-gp")
EMA_STATS_SEED = 20_000  # noise seeds EMA_STATS_SEED.. re-estimate the EMA generator's BatchNorm statistics
CHECKPOINT_RE = re.compile(r"checkpoint-(\d{6})\.npz$")


class GAN(keras.Model):
    """Generator + discriminator trained adversarially; one `train_step` = one D update and `g_steps` G updates."""

    def __init__(self, config, **kwargs):
        super().__init__(name="gan", **kwargs)
        if config.loss not in LOSSES:
            raise ValueError(f"unknown loss {config.loss!r}; choose from {', '.join(LOSSES)}")
        if config.g_steps < 1:
            raise ValueError(f"g_steps must be >= 1, got {config.g_steps}")
        self.config = config
        self.generator = build_generator(config)
        self.discriminator = models.build_discriminator(
            config.arch, config.d_widths, config.d_dropout, spectral_norm=config.spectral_norm
        )
        self.ema_generator = build_generator(config, name="ema_generator") if config.ema_decay > 0 else None
        if self.ema_generator is not None:
            self.ema_generator.set_weights(self.generator.get_weights())
        self.policy = augment_lib.parse_policy(config.augment)
        start_p = 0.0 if config.ada_target > 0 else config.augment_p
        self.augment_p = tf.Variable(start_p, trainable=False, dtype=tf.float32, name="augment_p")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "r_t", "augment_p")}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, **kwargs):
        c = self.config
        self.d_optimizer = keras.optimizers.Adam(c.lr_d, beta_1=c.beta_1, beta_2=c.beta_2, name="d_adam")
        self.g_optimizer = keras.optimizers.Adam(c.lr_g, beta_1=c.beta_1, beta_2=c.beta_2, name="g_adam")
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        super().compile(**kwargs)

    # ------------------------------------------------------------ sampling
    def sample(self, seeds, batch_size=64):
        """Images [N, 128, 128, 1] in [-1, 1] for integer seeds, from the EMA generator when there is one."""
        return sample_lib.generate(self.ema_generator or self.generator, seeds, batch_size)

    # ------------------------------------------------------------ losses
    def _d_loss(self, d_real, d_fake):
        loss, smooth = self.config.loss, self.config.label_smoothing
        if loss == "bce":
            p_real, p_fake = tf.sigmoid(d_real), tf.sigmoid(d_fake)
            return keras.losses.binary_crossentropy(tf.ones_like(p_real) * (1 - smooth), p_real) + keras.losses.binary_crossentropy(tf.zeros_like(p_fake), p_fake)
        if loss == "non-saturating":
            real_term = (1 - smooth) * tf.nn.softplus(-d_real) + smooth * tf.nn.softplus(d_real)
            return tf.reduce_mean(real_term) + tf.reduce_mean(tf.nn.softplus(d_fake))
        if loss == "hinge":
            return tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
        return tf.reduce_mean(d_fake) - tf.reduce_mean(d_real)  # wgan-gp (penalty added separately)

    def _g_loss(self, d_fake):
        if self.config.loss == "bce":
            p_fake = tf.sigmoid(d_fake)
            return tf.reduce_mean(keras.losses.binary_crossentropy(tf.ones_like(p_fake), p_fake))
        if self.config.loss == "non-saturating":
            return tf.reduce_mean(tf.nn.softplus(-d_fake))
        return -tf.reduce_mean(d_fake)  # hinge and wgan-gp

    def _augment(self, images, seed):
        if not self.policy:
            return images
        return augment_lib.augment(images, self.policy, self.augment_p, seed)

    def _gradient_penalty(self, real, fake, seed):
        n = tf.shape(real)[0]
        eps = tf.random.stateless_uniform([n, 1, 1, 1], seed=seed)  # [N, 1, 1, 1], uniform as in Gulrajani et al.
        mixed = eps * real + (1.0 - eps) * fake  # [N, 128, 128, 1]
        with tf.GradientTape() as tape:
            tape.watch(mixed)
            score = self.discriminator(mixed, training=True)
        grad = tape.gradient(score, mixed)
        norm = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]) + 1e-12)  # [N]
        return tf.reduce_mean(tf.square(norm - 1.0))

    def _lazy_r1(self, real_aug):
        c = self.config
        if c.r1_every <= 1:
            return 0.5 * c.r1_gamma * self._r1_penalty(real_aug)
        due = tf.equal(self.d_optimizer.iterations % c.r1_every, 0)
        return tf.cond(due, lambda: 0.5 * c.r1_gamma * c.r1_every * self._r1_penalty(real_aug), lambda: tf.constant(0.0))

    def _r1_penalty(self, real_aug):
        with tf.GradientTape() as tape:
            tape.watch(real_aug)
            score = self.discriminator(real_aug, training=True)
        grad = tape.gradient(score, real_aug)
        return tf.reduce_mean(tf.reduce_sum(tf.square(grad), axis=[1, 2, 3]))

    # ------------------------------------------------------------ step
    def _seed(self, stream):
        step = tf.cast(self.d_optimizer.iterations, tf.int64)
        return tf.stack([tf.constant(self.config.seed * 1000 + stream, tf.int64), step])

    def train_step(self, real):
        c = self.config
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        n = tf.shape(real)[0]
        z = tf.random.stateless_normal([n, c.latent_dim], seed=self._seed(0))  # [N, latent]
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)  # [N, 128, 128, 1]
            real_aug = self._augment(real, self._seed(1))
            fake_aug = self._augment(fake, self._seed(2))
            d_real = self.discriminator(real_aug, training=True)  # [N, 1]
            d_fake = self.discriminator(fake_aug, training=True)  # [N, 1]
            d_loss = self._d_loss(d_real, d_fake)
            total = d_loss
            if c.loss == "wgan-gp":
                total += c.gp_weight * self._gradient_penalty(real_aug, fake_aug, self._seed(3))
            if c.r1_gamma > 0:
                total += self._lazy_r1(real_aug)
            total = tf.reduce_mean(total) / replicas
        grads = tape.gradient(total, self.discriminator.trainable_variables)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_variables))
        g_loss = tf.constant(0.0)
        for k in range(c.g_steps):
            z = tf.random.stateless_normal([n, c.latent_dim], seed=self._seed(10 + k))  # [N, latent]
            with tf.GradientTape() as tape:
                fake = self.generator(z, training=True)
                g_loss = self._g_loss(self.discriminator(self._augment(fake, self._seed(20 + k)), training=True))
                scaled = g_loss / replicas
            grads = tape.gradient(scaled, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_variables))
        self._update_ema()
        r_t = tf.reduce_mean(tf.sign(d_real))
        self._update_ada(r_t, n)
        return self._track(d_loss, g_loss, d_real, d_fake, r_t)

    def _track(self, d_loss, g_loss, d_real, d_fake, r_t):
        values = {
            "d_loss": tf.reduce_mean(d_loss), "g_loss": g_loss,
            "d_acc_real": tf.reduce_mean(tf.cast(d_real > 0, tf.float32)),
            "d_acc_fake": tf.reduce_mean(tf.cast(d_fake < 0, tf.float32)),
            "r_t": r_t, "augment_p": self.augment_p,
        }
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: t.result() for name, t in self.trackers.items()}

    def _update_ema(self):
        if self.ema_generator is None:
            return
        d = self.config.ema_decay
        for ema_w, w in zip(self.ema_generator.trainable_variables, self.generator.trainable_variables):
            ema_w.assign(d * ema_w + (1.0 - d) * w)
        for ema_w, w in zip(self.ema_generator.non_trainable_variables, self.generator.non_trainable_variables):
            ema_w.assign(w)

    def refresh_ema_batchnorm(self, n=256):
        """Set the EMA generator's BatchNorm moving statistics to those of its own activations on fixed noise.

        The averaged weights never ran in training mode, so the live generator's statistics do not fit
        them: early in training the EMA samples came out flat and alike (within-set MS-SSIM 0.77 vs
        0.18 after re-estimation, 5 epochs of the `best` recipe).
        """
        layers = [layer for layer in (self.ema_generator.layers if self.ema_generator else []) if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            return
        z = sample_lib.noise_for_seeds(range(EMA_STATS_SEED, EMA_STATS_SEED + n), self.config.latent_dim)  # [n, latent]
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.momentum = 0.0  # one training-mode pass then stores the exact batch statistics
        try:
            self.ema_generator(z, training=True)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    def _update_ada(self, r_t, n):
        c = self.config
        if c.ada_target <= 0 or not self.policy:
            return
        step = tf.sign(r_t - c.ada_target) * tf.cast(n, tf.float32) / (c.ada_kimg * 1000.0)
        self.augment_p.assign(tf.clip_by_value(self.augment_p + step, 0.0, 1.0))

    # ------------------------------------------------------------ checkpoints
    def state_groups(self):
        """Named groups of every variable that defines the training state (weights, BN stats, RNG, optimizers)."""
        groups = {
            "g": self.generator.variables,
            "d": self.discriminator.variables,
            "g_opt": self.g_optimizer.variables,
            "d_opt": self.d_optimizer.variables,
            "misc": [self.augment_p],
        }
        if self.ema_generator is not None:
            groups["ema"] = self.ema_generator.variables
        return groups

    def save_checkpoint(self, path, epoch):
        """Write the whole training state to an .npz (plain arrays: loading never runs code)."""
        arrays = {"epoch": np.array(epoch)}
        for group, variables in self.state_groups().items():
            for i, v in enumerate(variables):
                arrays[f"{group}/{i:04d}"] = np.asarray(v.numpy())
        path = pathlib.Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    def load_checkpoint(self, path):
        """Restore the state written by `save_checkpoint`; returns its epoch."""
        with np.load(path, allow_pickle=False) as z:
            for group, variables in self.state_groups().items():
                assign_group(variables, z, group, path)
            return int(z["epoch"])


def assign_group(variables, archive, group, path):
    """Assign arrays `<group>/NNNN` of an open npz to `variables`, checking count and shapes."""
    keys = sorted(k for k in archive.files if k.startswith(group + "/"))
    if len(keys) != len(variables):
        raise ValueError(f"{path}: {len(keys)} arrays for '{group}' but the model has {len(variables)}; config and checkpoint disagree")
    for key, var in zip(keys, variables):
        value = archive[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(f"{path}: {key} has shape {value.shape}, model expects {tuple(var.shape)}")
        var.assign(value)


def build_generator(config, name=None):
    """The generator described by `config`."""
    return models.build_generator(
        config.arch, config.latent_dim, config.g_widths, config.g_base_width, config.upsample, name=name,
        block_convs=config.g_block_convs, out_kernel=config.g_out_kernel,
    )


# ---------------------------------------------------------------- run folders

def new_run_dir(preset, root=None):
    """Create `root/<NNNNN>-<preset>/` with the next free number."""
    root = pathlib.Path(root or paths.MODELS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name.split("-", 1)[0]) for p in root.iterdir() if re.match(r"\d{5}-", p.name)]
    run_dir = root / f"{max(numbers, default=-1) + 1:05d}-{preset}"
    run_dir.mkdir()
    return run_dir


def latest_checkpoint(run_dir):
    """Path of the highest-epoch `checkpoint-NNNNNN.npz` in `run_dir`, or None."""
    found = sorted(p for p in pathlib.Path(run_dir).glob("checkpoint-*.npz") if CHECKPOINT_RE.search(p.name))
    return found[-1] if found else None


def truncate_jsonl(run_dir, epoch):
    """Drop lines with epoch > `epoch` from every *.jsonl log in `run_dir` (used on resume)."""
    for file in pathlib.Path(run_dir).glob("*.jsonl"):
        lines = [ln for ln in file.read_text().splitlines() if ln.strip() and json.loads(ln).get("epoch", 0) <= epoch]
        file.write_text("".join(ln + "\n" for ln in lines))


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
            sample_lib.save_grid(self.model.sample(self.seeds), self.run_dir / f"samples-{done:06d}.png")


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
        self.model.save_checkpoint(self.run_dir / f"checkpoint-{done:06d}.npz", done)
        found = sorted(p for p in self.run_dir.glob("checkpoint-*.npz") if CHECKPOINT_RE.search(p.name))
        for old in found[: -self.keep]:
            old.unlink()


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

def epoch_dataset(images, batch_size, seed, first_epoch, last_epoch):
    """Batches for epochs [first_epoch, last_epoch): each epoch a permutation fixed by (seed, epoch)."""
    n = len(images)
    if n < batch_size:
        raise ValueError(f"batch size {batch_size} is larger than the {n} training images")
    table = tf.constant(images)  # [N, 128, 128, 1]

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([tf.cast(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)

    epochs = tf.data.Dataset.range(first_epoch, last_epoch)
    return epochs.flat_map(one_epoch).map(lambda idx: tf.gather(table, idx)).prefetch(2)  # [B, 128, 128, 1]


def training_images(config, data_dir=None):
    """(train images, val images) for `config`: the shared patient-level split, then the `max_images` cap."""
    train_ds, val_ds = data_lib.load_split(data_dir, config.classes, config.flip, config.val_fraction, config.split_seed)
    train = train_ds.images
    if config.max_images:
        train = train[np.random.RandomState(config.seed).permutation(len(train))[: config.max_images]]
    return train, val_ds.images


# ---------------------------------------------------------------- the job

def train(config, run_dir=None, data_dir=None, resume=False, callbacks=(), images=None, verbose=True):
    """Train `config` in `run_dir` (a new `models/<NNNNN>-<preset>/` when None); returns the run folder.

    `resume=True` continues from the newest checkpoint in `run_dir`: epoch counter, weights, optimizer
    state, augmentation and noise streams, so the result equals an uninterrupted run; `epochs` and
    `time_budget_minutes` come from `config`, everything else from the run's config.json. `images`
    overrides the data (tests).
    """
    run_dir = _prepare_run_dir(config, run_dir, resume)
    if resume:
        config = config_lib.Config.load(run_dir).replace(epochs=config.epochs, time_budget_minutes=config.time_budget_minutes)
    config.save(run_dir)
    if images is None:
        images, val_images = training_images(config, data_dir)
    else:
        val_images = images
    keras.utils.set_random_seed(config.seed)  # initial weights and dropout streams follow the seed
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        gan = GAN(config)
        gan.compile()
    initial_epoch = 0
    if resume:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise ValueError(f"nothing to resume: no checkpoint-*.npz in {run_dir}")
        initial_epoch = gan.load_checkpoint(ckpt)
        truncate_jsonl(run_dir, initial_epoch)
    if initial_epoch >= config.epochs:
        return run_dir
    steps = len(images) // config.batch_size
    dataset = epoch_dataset(images, config.batch_size, config.seed, initial_epoch, config.epochs)
    all_callbacks = _callbacks(config, run_dir, gan, images, val_images, steps, initial_epoch, verbose) + list(callbacks)
    gan.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, callbacks=all_callbacks, verbose=0)
    return run_dir


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
        from covgan_utils import guard

        out.append(guard.DivergenceGuard(run_dir, config, images))
    if config.metrics_every:
        try:
            from covgan_utils import metrics
        except ImportError:
            metrics = None
        if metrics is not None and hasattr(metrics, "MetricsCallback"):
            out.append(metrics.MetricsCallback(run_dir, val_images, images, every=config.metrics_every, features=config.metrics_features))
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

def add_commands(subparsers):
    p = subparsers.add_parser("train", help="train a GAN preset into a run folder")
    p.add_argument("--preset", default=None, help=f"one of {', '.join(config_lib.PRESETS)} (default quick, smoke under COVGAN_SMOKE=1)")
    p.add_argument("--data", help="data folder (default: $COVGAN_DATA, data/raw/, ../shared/data/covid-ct)")
    p.add_argument("--run-dir", help="run folder (default: next models/<NNNNN>-<preset>/)")
    p.add_argument("--epochs", type=int, help="total epochs (also extends a resumed run)")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--minutes", type=float, help="wall-clock budget of this invocation: stop (with a checkpoint) after the first epoch past it")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (or the newest run of the preset)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="change config fields, e.g. --set g_widths=256,128,64,32,16 loss=hinge")
    p.set_defaults(func=_cli_train)


def _cli_train(args):
    pairs = (("epochs", args.epochs), ("seed", args.seed), ("time_budget_minutes", args.minutes))
    overrides = {k: v for k, v in pairs if v is not None}
    if args.epochs is not None and args.epochs < 1:
        raise ValueError("--epochs must be at least 1")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError("--minutes must be positive")
    config = config_lib.get_preset(args.preset or config_lib.default_preset(), **overrides).with_overrides(args.set)
    if args.set and args.resume:
        raise ValueError("--set cannot change a run being resumed; its config.json is kept")
    if args.resume and args.epochs is None and args.run_dir:
        config = config.replace(epochs=config_lib.Config.load(args.run_dir).epochs)
    run_dir = train(config, args.run_dir, data_dir=args.data, resume=args.resume)
    print(run_dir)
