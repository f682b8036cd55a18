"""A textbook GAN training step, written as the Keras examples write one, on the project's own models.

TensorFlow: keras-io's "DCGAN to generate face images" / "WGAN-GP" `train_step`: a `tf.function`, one
`tf.GradientTape` for the discriminator update on the real and the fake batch (binary cross-entropy
from logits), one for the generator update. JAX: the Keras guide "Customizing what happens in fit()
with JAX": a jitted pure function over the models' state, `stateless_call`, `jax.value_and_grad`,
`optimizer.stateless_apply`. Both use the generator and discriminator that
`covgan_utils.nets.families` builds for the config (under its dtype policy) and plain Adam with the
config's learning rates and betas.

The discriminator sees the real and the fake batch in two calls, as in WGAN-GP and as the project's step
does (the DCGAN example concatenates them into one call of 2B): the step does the same work as the
project's step with augmentation, ADA, R1 and EMA off, so the ratio of the two times is the project's
overhead.
"""
import functools

import keras
import numpy as np
from keras import ops

from covgan_utils.nets import families
from covgan_utils.util import backend


def build_models(config):
    """(generator, discriminator) as the project builds them for `config` (its precision's dtype policy)."""
    with backend.dtype_policy(config.precision):
        return families.generator_for(config), families.discriminator_for(config)


def bce_from_logits(target, logits):
    """Mean binary cross-entropy of logits [B, 1] against a constant target (1.0 real, 0.0 fake)."""
    logits = ops.cast(logits, "float32")
    return ops.mean(keras.losses.binary_crossentropy(ops.full_like(logits, target), logits, from_logits=True))


def make_step(config):
    """The textbook step for the running Keras backend: `step(batch)` -> logs {"d_loss", "g_loss"}."""
    name = keras.backend.backend()
    if name == "tensorflow":
        return TFTextbookStep(config)
    if name == "jax":
        return JaxTextbookStep(config)
    raise ValueError(f"the textbook step runs on the tensorflow or jax Keras backend, not {name!r}")


class _Textbook:
    def __init__(self, config):
        self.config = config
        self.generator, self.discriminator = build_models(config)
        self.g_optimizer = keras.optimizers.Adam(config.lr_g, beta_1=config.beta_1, beta_2=config.beta_2)
        self.d_optimizer = keras.optimizers.Adam(config.lr_d, beta_1=config.beta_1, beta_2=config.beta_2)
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def weights(self):
        """(generator, discriminator) trainable weights as NumPy arrays."""
        return ([np.array(v) for v in self.generator.trainable_variables], [np.array(v) for v in self.discriminator.trainable_variables])


class TFTextbookStep(_Textbook):
    """keras-io's DCGAN / WGAN-GP `train_step`, compiled with `tf.function`."""

    def __init__(self, config):
        import tensorflow as tf  # the TensorFlow backend is running: TensorFlow is loaded already

        super().__init__(config)
        self.tf, self.seed = tf, keras.random.SeedGenerator(config.seed)
        self.compiled = tf.function(self.train_step, autograph=False)

    def __call__(self, batch):
        return self.compiled(batch)

    def train_step(self, real_images):
        tf, G, D, n = self.tf, self.generator, self.discriminator, real_images.shape[0]
        z = keras.random.normal((n, self.config.latent_dim), seed=self.seed)  # [B, latent]
        fake_images = G(z, training=True)  # [B, 128, 128, 1]
        with tf.GradientTape() as tape:
            d_loss = bce_from_logits(1.0, D(real_images, training=True)) + bce_from_logits(0.0, D(fake_images, training=True))
        grads = tape.gradient(d_loss, D.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, D.trainable_weights))
        z = keras.random.normal((n, self.config.latent_dim), seed=self.seed)  # [B, latent]
        with tf.GradientTape() as tape:
            g_loss = bce_from_logits(1.0, D(G(z, training=True), training=True))
        grads = tape.gradient(g_loss, G.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, G.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


class JaxTextbookStep(_Textbook):
    """The Keras JAX guide's pattern: a jitted pure function over (weights, optimizer variables, random key)."""

    def __init__(self, config):
        import jax

        super().__init__(config)
        self.jax = jax
        G, D = self.generator, self.discriminator
        self.state = {
            "g_tv": [v.value for v in G.trainable_variables], "g_ntv": [v.value for v in G.non_trainable_variables],
            "d_tv": [v.value for v in D.trainable_variables], "d_ntv": [v.value for v in D.non_trainable_variables],
            "g_opt": [v.value for v in self.g_optimizer.variables], "d_opt": [v.value for v in self.d_optimizer.variables],
            "key": jax.random.PRNGKey(config.seed),
        }
        self.compiled = jax.jit(self.train_step)

    def __call__(self, batch):
        self.state, logs = self.compiled(self.state, batch)
        return logs

    def weights(self):
        return [np.array(v) for v in self.state["g_tv"]], [np.array(v) for v in self.state["d_tv"]]

    def train_step(self, state, real_images):
        jax, G, n = self.jax, self.generator, real_images.shape[0]
        s = dict(state)
        s["key"], k_d, k_g = jax.random.split(state["key"], 3)
        z = jax.random.normal(k_d, (n, self.config.latent_dim))  # [B, latent]
        fake_images, s["g_ntv"] = G.stateless_call(s["g_tv"], s["g_ntv"], z, training=True)  # [B, 128, 128, 1]
        d_loss_fn = functools.partial(self._d_loss, real_images=real_images, fake_images=fake_images)
        (d_loss, s["d_ntv"]), grads = jax.value_and_grad(d_loss_fn, has_aux=True)(s["d_tv"], s["d_ntv"])
        s["d_tv"], s["d_opt"] = self.d_optimizer.stateless_apply(s["d_opt"], grads, s["d_tv"])
        z = jax.random.normal(k_g, (n, self.config.latent_dim))  # [B, latent]
        g_loss_fn = functools.partial(self._g_loss, d_tv=s["d_tv"], z=z)
        (g_loss, (s["g_ntv"], s["d_ntv"])), grads = jax.value_and_grad(g_loss_fn, has_aux=True)(s["g_tv"], s["g_ntv"], s["d_ntv"])
        s["g_tv"], s["g_opt"] = self.g_optimizer.stateless_apply(s["g_opt"], grads, s["g_tv"])
        return s, {"d_loss": d_loss, "g_loss": g_loss}

    def _d_loss(self, d_tv, d_ntv, real_images, fake_images):
        D = self.discriminator
        real_logits, d_ntv = D.stateless_call(d_tv, d_ntv, real_images, training=True)  # [B, 1]
        fake_logits, d_ntv = D.stateless_call(d_tv, d_ntv, fake_images, training=True)  # [B, 1]
        return bce_from_logits(1.0, real_logits) + bce_from_logits(0.0, fake_logits), d_ntv

    def _g_loss(self, g_tv, g_ntv, d_ntv, d_tv, z):
        fake_images, g_ntv = self.generator.stateless_call(g_tv, g_ntv, z, training=True)  # [B, 128, 128, 1]
        logits, d_ntv = self.discriminator.stateless_call(d_tv, d_ntv, fake_images, training=True)  # [B, 1]
        return bce_from_logits(1.0, logits), (g_ntv, d_ntv)
