"""The `GAN` model: generator, discriminator and EMA generator, their optimizers, the augmentation
probability and the training seed generator; everything a checkpoint holds.

The backend is Keras's (`KERAS_BACKEND=tensorflow`, the default, or `jax`); nothing here imports
TensorFlow. The gradient step for each backend is in `covgan_utils.training.steps`; checkpoints are the
same on both, so a run started under one resumes under the other.
"""
import random

import keras
import numpy as np

from covgan_utils import checkpoints, sampling
from covgan_utils.nets import families
from covgan_utils.training import augment as augment_lib
from covgan_utils.training import losses, steps
from covgan_utils.util import backend, hardware

# checkpoint groups a state may lack: the RNG (older runs), the loss scales (runs not in mixed_float16)
OPTIONAL_GROUPS = ("rng", "g_scale", "d_scale")
EMA_STATS_SEED = 20_000  # noise seeds EMA_STATS_SEED.. re-estimate the EMA generator's BatchNorm statistics


class GAN(keras.Model):
    """Generator + discriminator (+ EMA generator), their optimizers, the augmentation probability and the
    training seed generator: everything a checkpoint holds. One training step = one D update and
    `g_steps` G updates (`covgan_utils.training.steps`)."""

    def __init__(self, config, **kwargs):
        super().__init__(name="gan", **kwargs)
        self.config = config = resolved_precision(config)
        with backend.dtype_policy(config.precision):  # float32 variables either way; mixed_*: bf16 / f16 compute
            self.generator = families.generator_for(config)
            self.discriminator = families.discriminator_for(config)
        # the EMA generator only samples: float32, so the image of a seed does not depend on the training precision
        self.ema_generator = families.generator_for(config, name="ema_generator") if losses.uses_ema(config) else None
        if self.ema_generator is not None:
            self.ema_generator.set_weights(self.generator.get_weights())
        self.policy = augment_lib.parse_policy(config.augment)
        start_p = 0.0 if config.ada_target > 0 else config.augment_p
        self.augment_p = keras.Variable(start_p, trainable=False, dtype="float32", name="augment_p")
        self.seed_generator = keras.random.SeedGenerator(config.seed, name="train_seed")
        self.stop_training = False
        self.ema_stale = False  # the EMA generator's BatchNorm statistics predate its weights (`fresh_ema`)

    def compile(self, **kwargs):
        c = self.config
        self.d_optimizer = _optimizer(c.lr_d, c, "d_adam", c.batch_size, lazy_ratio(c))
        self.g_optimizer = _optimizer(c.lr_g, c, "g_adam", c.batch_size / c.g_steps)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
        super().compile(**kwargs)

    def sample(self, seeds, batch_size=64):
        """Images [N, 128, 128, 1] in [-1, 1] for integer seeds, from the EMA generator when there is one, seen
        through the config's scaling (the generators' `output_scaling`): sample grids, guard and metrics all look at these."""
        self.fresh_ema()
        return sampling.generate(self.ema_generator or self.generator, seeds, batch_size)

    def fresh_ema(self):
        """Re-estimate the EMA generator's BatchNorm statistics if training changed its weights since the
        last time; everything that samples or saves calls this first, so epochs nobody reads skip the pass."""
        if self.ema_stale:
            self.refresh_ema_batchnorm()

    def refresh_ema_batchnorm(self, n=256):
        """Set the EMA generator's BatchNorm moving statistics to those of its own activations on fixed noise.

        The averaged weights never ran in training mode, so the live generator's statistics do not fit
        them: early in training the EMA samples came out flat and alike (within-set MS-SSIM 0.77 vs
        0.18 after re-estimation, 5 epochs of the `best` recipe).
        """
        self.ema_stale = False
        layers = [layer for layer in (self.ema_generator.layers if self.ema_generator else []) if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            return
        z = sampling.noise_for_seeds(range(EMA_STATS_SEED, EMA_STATS_SEED + n), self.config.latent_dim)  # [n, latent]
        labels = (np.arange(n) % max(families.class_count(self.config), 1))[:, None].astype(np.int32)  # [n, 1] every class alike
        momenta = [layer.momentum for layer in layers]
        for layer in layers:
            layer.momentum = 0.0  # one training-mode pass then stores the exact batch statistics
        try:
            self.ema_generator(backend.with_label(z, labels if self.config.conditional else None), training=True)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    # ------------------------------------------------------------ checkpoints
    def state_groups(self):
        """Named groups of every variable that defines the training state (weights, BN stats, RNG, optimizers)."""
        groups = {
            "g": self.generator.variables,
            "d": self.discriminator.variables,
            "g_opt": _inner(self.g_optimizer).variables,  # Adam's state whatever the precision: checkpoints do not depend on it
            "d_opt": _inner(self.d_optimizer).variables,
            "misc": [self.augment_p],
            "rng": [self.seed_generator.state],
        }
        if self.ema_generator is not None:
            groups["ema"] = self.ema_generator.variables
        for name, optimizer in (("g_scale", self.g_optimizer), ("d_scale", self.d_optimizer)):
            if optimizer is not _inner(optimizer):  # mixed_float16: the dynamic loss scale and its step counter
                groups[name] = [optimizer.dynamic_scale, optimizer.step_counter]
        return groups

    def save_checkpoint(self, path, epoch):
        """Write the whole training state to an .npz (plain arrays: loading never runs code), atomically."""
        self.fresh_ema()
        arrays = {"epoch": np.array(epoch), "backend": np.array(keras.backend.backend())}
        for group, variables in self.state_groups().items():
            arrays.update(checkpoints.to_arrays(group, variables))
        checkpoints.save_arrays(path, arrays)

    def load_checkpoint(self, path):
        """Restore the state written by `save_checkpoint` (under either backend), all or nothing; returns its epoch."""
        return checkpoints.load_state(path, self.state_groups(), optional=OPTIONAL_GROUPS)

    # ------------------------------------------------------------ the loop
    def stepper(self):
        """The backend's step object (`covgan_utils.training.steps`), made once per GAN."""
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
        self.ema_stale = self.ema_generator is not None
        return logs

    def run_epochs(self, data, orders, initial_epoch, epochs, callbacks=()):
        """Train epochs [initial_epoch, epochs) on `data` (images [N, 128, 128, 1], or (images, labels [N, 1]))
        with batch j of epoch e being rows `orders(e)[j]` (`orders(e)`: int [k, B]), calling Keras callbacks
        as `fit` does; returns the last epoch's logs.

        An epoch is one dispatch of the compiled step loop on device-resident data (`step.run`), unless a
        callback acts after every batch: then its steps run one by one and the variables are written
        back around each callback."""
        step = self.stepper()
        cbs = keras.callbacks.CallbackList(list(callbacks), model=self)
        batch_hooks = any(type(cb).on_train_batch_end is not keras.callbacks.Callback.on_train_batch_end for cb in callbacks)
        resident = None if batch_hooks else step.put(data)
        self.stop_training, logs = False, {}
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            order = np.asarray(orders(epoch), np.int32)  # [k, B]
            step.load()
            if batch_hooks:
                logs = self._steps_one_by_one(step, data, order, cbs)
            else:
                total = step.run(resident, order, self.d_steps_done())
                logs = {k: float(v) / len(order) for k, v in total.items()}
            step.store()
            self.ema_stale = self.ema_generator is not None
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return logs

    def _steps_one_by_one(self, step, data, order, cbs):
        """An epoch step by step with `on_train_batch_end` after each -> the epoch's mean logs."""
        d_step, history = self.d_steps_done(), []
        for index, rows in enumerate(order):
            batch = tuple(x[rows] for x in data) if isinstance(data, (tuple, list)) else data[rows]
            history.append({k: float(v) for k, v in step(batch, losses.r1_is_due(self.config, d_step)).items()})
            d_step += 1
            step.store()  # a callback may read or change the variables mid-epoch
            cbs.on_train_batch_end(index, history[-1])
            step.load()
        return {k: float(np.mean([h[k] for h in history])) for k in history[0]}


def resolved_precision(config):
    """`config` with precision "auto" replaced by the fast precision of this machine (`hardware.fast_precision`)."""
    return config.replace(precision=hardware.fast_precision()) if config.precision == "auto" else config


def lazy_ratio(config):
    """StyleGAN2's correction for lazy regularisation every k steps, c = k / (k + 1) (1 when off)."""
    k = config.r1_every
    return k / (k + 1) if config.lazy_correction and losses.regularised(config) and k > 1 else 1.0


def _optimizer(learning_rate, config, name, images_per_step, ratio=1.0):
    """Adam of the recipe (`ScheduledAdam` where a schedule or the lazy correction changes it); under
    mixed_float16 wrapped in Keras's dynamic loss scaling."""
    if ratio != 1.0 or (config.schedule_kimg and (config.lr_end_ratio != 1.0 or config.beta_2_end)):
        adam = ScheduledAdam(learning_rate, config, images_per_step, ratio, name=name)
    else:
        adam = keras.optimizers.Adam(learning_rate, beta_1=config.beta_1, beta_2=config.beta_2, name=name)
    return keras.optimizers.LossScaleOptimizer(adam, name=f"{name}_scaled") if config.precision == "mixed_float16" else adam


class ScheduledAdam(keras.optimizers.Adam):
    """Adam whose learning rate and beta_2 follow the config's schedules over images seen, read from its own
    step counter (images seen = iterations * images_per_step), with StyleGAN2's lazy-regularisation
    correction `ratio`: learning rate x ratio, betas ** ratio. Its variables are Adam's (checkpoints alike);
    the learning-rate variable holds the base rate (the divergence guard scales it), each update uses it
    times the schedule's factor and the ratio."""

    def __init__(self, learning_rate, config, images_per_step, ratio=1.0, **kwargs):
        super().__init__(learning_rate, beta_1=config.beta_1**ratio, beta_2=config.beta_2, **kwargs)
        self.config, self.images_per_step, self.ratio = config, float(images_per_step), float(ratio)

    @property
    def beta_2(self):
        c = getattr(self, "config", None)
        if c is None or not (c.schedule_kimg and c.beta_2_end):
            return self._beta_2**getattr(self, "ratio", 1.0)
        return losses.scheduled(c, self._beta_2, c.beta_2_end, self._seen()) ** self.ratio

    @beta_2.setter
    def beta_2(self, value):
        self._beta_2 = value

    def _seen(self):
        return keras.ops.cast(self.iterations, "float32") * self.images_per_step  # before this update

    def update_step(self, gradient, variable, learning_rate):
        c, factor = self.config, self.ratio
        if c.schedule_kimg and c.lr_end_ratio != 1.0:
            factor = factor * losses.scheduled(c, 1.0, c.lr_end_ratio, self._seen())
        return super().update_step(gradient, variable, learning_rate * factor)


def _inner(optimizer):
    """The Adam inside a loss-scaling optimizer (or the optimizer itself)."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def seed_everything(seed):
    """Python, NumPy and backend seeds (initial weights and layer seed generators follow them).
    Under JAX this leaves TensorFlow unimported (`keras.utils.set_random_seed` would import it)."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)
        return
    random.seed(seed)
    np.random.seed(seed)
