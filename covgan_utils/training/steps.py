"""The gradient step of GAN training, once per Keras backend: the only backend-specific code of training.

Everything a step computes (losses, penalties, augmentation, ADA, EMA) is written once in `keras.ops`
in `covgan_utils.training.losses` and `covgan_utils.training.augment`; a step here only decides how gradients are taken
and where the state lives:

- TensorFlow (`TFStep`): a `tf.function` over the models' variables, `tf.GradientTape` for the
  parameter gradients and, nested, for d D(x) / d x (R1, WGAN-GP); state stays in the variables.
- JAX (`JaxStep`): a jitted pure function over the GAN's state (as the Keras guides for custom
  training under JAX do): `stateless_call` for the models, `jax.value_and_grad` for the parameter
  gradients and `jax.grad` for d D(x) / d x, `optimizer.stateless_apply` for the updates. The state is
  read from the variables at the start of an epoch (`load`) and written back at its end (`store`), so
  callbacks, checkpoints and the divergence guard see ordinary Keras variables.

All randomness of a step is drawn at its start from the GAN's `keras.random.SeedGenerator` (`draw`),
whose state is checkpointed, so a resumed run continues the same random streams. The schedules over
images seen (`losses.progress`) read the discriminator optimizer's step counter, also checkpointed.

Two ways to call a step object: `step(batch, r1_due)` runs one step on a batch (tests, the benchmark,
callbacks that act after every batch); `step.run(data, order, d_start)` runs a whole epoch in one
dispatch: `data` (from `step.put`) stays on the device, batch j is `data[order[j]]` gathered there,
the steps loop inside the compiled function (`tf.while_loop` / `lax.fori_loop`), lazy R1 is chosen per
step by a conditional on the discriminator step count, and the logs come back summed over the epoch.
Both give the same updates in the same order from the same random streams. (Under JAX on a CPU, where
XLA runs convolution gradients inside loop bodies slowly, `run` dispatches the epoch's steps one by one.)
"""
import functools

import keras
from keras import ops

from covgan_utils.training import augment as augment_lib
from covgan_utils.training import losses
from covgan_utils.util import backend


def draw(gan, n):
    """Every random number of one training step for a batch of `n`: noise, augmentation, GP mixing."""
    c, seed = gan.config, gan.seed_generator
    rand = {"z_d": keras.random.normal((n, c.latent_dim), seed=seed)}  # [N, latent]
    if gan.policy:
        rand["aug_real"] = augment_lib.draw(n, gan.policy, seed)  # [N, ops, 3]
        rand["aug_fake"] = augment_lib.draw(n, gan.policy, seed)
    if c.loss == "wgan-gp":
        rand["gp_eps"] = keras.random.uniform((n, 1, 1, 1), seed=seed)  # [N, 1, 1, 1]
    rand["z_g"] = [keras.random.normal((n, c.latent_dim), seed=seed) for _ in range(c.g_steps)]
    rand["aug_g"] = [augment_lib.draw(n, gan.policy, seed) if gan.policy else None for _ in range(c.g_steps)]
    if c.loss == "rpgan":  # the generator's steps see the real images too (pairing), freshly augmented
        rand["aug_g_real"] = [augment_lib.draw(n, gan.policy, seed) if gan.policy else None for _ in range(c.g_steps)]
    return rand


def split_batch(batch):
    """A training batch -> (images [B, 128, 128, 1], labels [B, 1] int32 or None): conditional runs
    train on (images, labels) pairs."""
    return batch if isinstance(batch, (tuple, list)) else (batch, None)




def scaled(optimizer, loss):
    """The loss a gradient is taken of: multiplied by the dynamic loss scale under mixed_float16 (the
    `LossScaleOptimizer` divides the gradients by it again and skips steps whose gradients are not finite)."""
    return optimizer.scale_loss(loss) if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else loss


def generated(G, z, labels):
    """Generator output [N, 128, 128, 1] as float32 (its compute dtype under a mixed policy is bf16 / f16)."""
    return ops.cast(G(backend.with_label(z, labels), training=True), "float32")


def take(data, index):
    """Rows `index` [B] of the training data: images [B, 128, 128, 1], or (images, labels [B, 1])."""
    if isinstance(data, (tuple, list)):
        return tuple(ops.take(x, index, axis=0) for x in data)
    return ops.take(data, index, axis=0)


def summed(total, logs):
    """Per-step logs added into the running totals of an epoch (the same keys: a log the totals lack is an error)."""
    if set(logs) != set(total):
        raise KeyError(f"step logs {sorted(logs)} do not match the epoch totals {sorted(total)} (losses.LOG_KEYS)")
    return {k: total[k] + logs[k] for k in total}


def lazy_r1(config):
    """True when R1/R2 run on some steps only (lazy regularisation): the step then branches on the step count."""
    return losses.regularised(config) and config.r1_every > 1


def images_seen(optimizer, n):
    """Images seen before this step, float32: the discriminator optimizer's step count times the batch `n`."""
    return ops.cast(optimizer.iterations, "float32") * n


def make_step(gan):
    """The step object for the running Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return TFStep(gan)
    if backend == "jax":
        return JaxStep(gan)
    raise ValueError(f"training runs on the tensorflow or jax Keras backend, not {backend!r}; set KERAS_BACKEND")


class TFStep:
    """`step(batch, r1_due)` -> logs; one `tf.function` per value of `r1_due`."""

    def __init__(self, gan):
        import tensorflow as tf  # the TensorFlow backend is running: TensorFlow is loaded already

        self.tf, self.gan, self.compiled = tf, gan, {}

    def load(self):
        """State lives in the variables: nothing to do."""

    def store(self):
        """State lives in the variables: nothing to do."""

    def __call__(self, batch, r1_due):
        if r1_due not in self.compiled:
            self.compiled[r1_due] = self.tf.function(functools.partial(self._step, r1_due=r1_due), autograph=False)  # all control flow is static Python
        return self.compiled[r1_due](batch)

    def put(self, data):
        """The training data as device tensors, once per run."""
        return self.tf.nest.map_structure(self.tf.convert_to_tensor, data)

    def run(self, data, order, d_start):
        """The steps of `order` [k, B] on `data` in one dispatch -> logs summed over the k steps."""
        if "run" not in self.compiled:
            self.compiled["run"] = self.tf.function(self._run, autograph=False)
        return self.compiled["run"](data, self.tf.constant(order, "int32"), self.tf.constant(d_start, "int64"))

    def _run(self, data, order, d_start):
        tf = self.tf
        zeros = {k: tf.zeros((), "float32") for k in losses.LOG_KEYS}  # the step is traced once, in the loop body

        def body(i, total):
            return i + 1, summed(total, self._one(take(data, order[i]), d_start + tf.cast(i, "int64")))

        return tf.while_loop(lambda i, _: i < tf.shape(order)[0], body, (tf.constant(0), zeros))[1]

    def _one(self, batch, d_step):
        """One step inside `run`; lazy R1 branches on the discriminator step count."""
        c = self.gan.config
        if not lazy_r1(c):
            return self._step(batch, r1_due=losses.regularised(c))
        due = self.tf.equal(d_step % c.r1_every, 0)
        return self.tf.cond(due, lambda: self._step(batch, r1_due=True), lambda: self._step(batch, r1_due=False))

    def _step(self, batch, r1_due):
        gan, c, tf = self.gan, self.gan.config, self.tf
        (real, labels), G, D = split_batch(batch), gan.generator, gan.discriminator
        n = real.shape[0]
        rand, seen = draw(gan, n), images_seen(gan.d_optimizer, n)  # read before this step's update

        def d_call(images):
            return D(backend.with_label(images, labels), training=True)

        def input_grad(images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                score = losses.logit_of(D(backend.with_label(images, labels), training=True))
            return tape.gradient(score, images)

        with tf.GradientTape() as tape:
            fake = generated(G, rand["z_d"], labels)  # [N, 128, 128, 1]; fakes take the real batch's classes
            total, (d_loss, d_real, d_fake) = losses.d_objective(c, gan.policy, d_call, input_grad, real, fake, rand, gan.augment_p, r1_due, seen)
            total = scaled(gan.d_optimizer, total)
        grads = tape.gradient(total, D.trainable_variables)
        gan.d_optimizer.apply_gradients(zip(grads, D.trainable_variables))
        g_loss = ops.zeros(())
        for k in range(c.g_steps):
            with tf.GradientTape() as tape:
                fake = generated(G, rand["z_g"][k], labels)  # [N, 128, 128, 1]
                g_loss = losses.g_objective(c, gan.policy, d_call, fake, rand["aug_g"][k], gan.augment_p, real, rand.get("aug_g_real", [None] * c.g_steps)[k])
                g_scaled = scaled(gan.g_optimizer, g_loss)
            grads = tape.gradient(g_scaled, G.trainable_variables)
            gan.g_optimizer.apply_gradients(zip(grads, G.trainable_variables))
        if gan.ema_generator is not None:
            ema = gan.ema_generator
            for e, new in zip(ema.trainable_variables, losses.ema(losses.ema_decay(c, seen, n), ema.trainable_variables, G.trainable_variables)):
                e.assign(new)
            for e, w in zip(ema.non_trainable_variables, G.non_trainable_variables):
                e.assign(w)
        p, r_t = losses.ada_update(c, gan.augment_p, d_real, n, seen)
        gan.augment_p.assign(p)
        return losses.step_logs(d_loss, g_loss, d_real, d_fake, r_t, p)


class JaxStep:
    """`step(batch, r1_due)` -> logs; a jitted pure function per value of `r1_due` over `self.state`."""

    def __init__(self, gan):
        import jax

        self.jax, self.gan, self.compiled, self.state = jax, gan, {}, None
        self.sharding = self._shardings(keras.distribution.distribution())
        # XLA's CPU backend runs convolution gradients inside a loop body many times slower than the same
        # step compiled alone (a 3-convolution gradient step: 44x), so on a CPU the epoch's steps are
        # dispatched one by one, each still gathering its batch from the device-resident data
        self.loop_on_device = jax.default_backend() != "cpu"
        G, D = gan.generator, gan.discriminator
        ema = gan.ema_generator
        self.groups = {
            "g_tv": G.trainable_variables, "g_ntv": G.non_trainable_variables,
            "d_tv": D.trainable_variables, "d_ntv": D.non_trainable_variables,
            "g_opt": gan.g_optimizer.variables, "d_opt": gan.d_optimizer.variables,
            "ema_tv": ema.trainable_variables if ema is not None else [],
            "ema_ntv": ema.non_trainable_variables if ema is not None else [],
            "misc": [gan.augment_p, gan.seed_generator.state],
        }

    def load(self):
        """Read the state from the variables (start of an epoch, or after a callback changed them)."""
        self.state = {k: [v.value for v in vs] for k, vs in self.groups.items()}

    def store(self):
        """Write the state back into the variables (end of an epoch, or before a callback reads them)."""
        for k, vs in self.groups.items():
            for v, value in zip(vs, self.state[k]):
                v.assign(value)

    def __call__(self, batch, r1_due):
        if r1_due not in self.compiled:
            self.compiled[r1_due] = self.jax.jit(functools.partial(self._step, r1_due=r1_due))
        self.state, logs = self.compiled[r1_due](self.state, self._placed(batch, "batch"))
        return logs

    def _shardings(self, dist):
        """Under `DataParallel` (`covgan_utils.training.distribute`): where data, batch indices and batches
        live; the state is replicated like the variables it comes from."""
        if dist is None:
            return None
        mesh, axis, spec = dist.device_mesh.backend_mesh, dist.batch_dim_name, self.jax.sharding.PartitionSpec
        named = functools.partial(self.jax.sharding.NamedSharding, mesh)
        return {"data": named(spec()), "order": named(spec(None, axis)), "batch": named(spec(axis))}

    def _placed(self, value, where):
        """`value` on the device(s): sharded as `where` under a distribution."""
        return self.jax.device_put(value, self.sharding[where] if self.sharding else None)

    def put(self, data):
        """The training data as device arrays, once per run (replicated on every device under DataParallel)."""
        return self._placed(data, "data")

    def run(self, data, order, d_start):
        """The steps of `order` [k, B] on `data` in one dispatch -> logs summed over the k steps; under
        DataParallel each device gathers its share of every batch."""
        order = self._placed(order, "order")
        if not self.loop_on_device:
            return self._run_stepwise(data, order, d_start)
        if "run" not in self.compiled:
            self.compiled["run"] = self.jax.jit(self._run)
        self.state, total = self.compiled["run"](self.state, data, order, d_start)
        return total

    def _run_stepwise(self, data, order, d_start):
        """`run` with one dispatch per step (CPU): the same steps, lazy R1 decided on the host."""
        total = None
        for j in range(order.shape[0]):
            due = losses.r1_is_due(self.gan.config, d_start + j)
            if ("gather", due) not in self.compiled:
                self.compiled[("gather", due)] = self.jax.jit(functools.partial(self._gathered, r1_due=due))
            self.state, logs = self.compiled[("gather", due)](self.state, data, order[j])
            total = logs if total is None else summed(total, logs)
        return total

    def _gathered(self, state, data, rows, r1_due):
        """One step on the batch `rows` [B] of the device-resident data."""
        return self._step(state, take(data, rows), r1_due)

    def _run(self, state, data, order, d_start):
        zeros = {k: self.jax.numpy.zeros((), "float32") for k in losses.LOG_KEYS}  # the step is traced once, in the loop body

        def body(i, carry):
            state, logs = self._one(carry[0], take(data, order[i]), d_start + i)
            return state, summed(carry[1], logs)

        return self.jax.lax.fori_loop(0, order.shape[0], body, (state, zeros))

    def _one(self, state, batch, d_step):
        """One step inside `run`; lazy R1 branches on the discriminator step count."""
        c = self.gan.config
        if not lazy_r1(c):
            return self._step(state, batch, r1_due=losses.regularised(c))
        rand, state = self._draw(state, split_batch(batch)[0].shape[0])  # outside the branches: the same draws as a single step
        step = functools.partial(self._step, batch=batch, rand=rand)
        return self.jax.lax.cond(d_step % c.r1_every == 0, functools.partial(step, r1_due=True), functools.partial(step, r1_due=False), state)

    def _seen(self, optimizer_state, n):
        """`images_seen` from the discriminator optimizer's state in this step."""
        optimizer = self.gan.d_optimizer
        with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_state))):
            return images_seen(optimizer, n)

    def _scaled(self, optimizer, optimizer_state, loss):
        """`scaled` with the loss scale read from this step's optimizer state (not the variable's value at trace time)."""
        with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_state))):
            return scaled(optimizer, loss)

    def _d_caller(self, d_tv, d_ntv, labels):
        """(d_call, input_grad, holder) for discriminator weights d_tv; holder[0] tracks the updated d_ntv."""
        D, holder = self.gan.discriminator, [d_ntv]

        def d_call(images):
            score, holder[0] = D.stateless_call(d_tv, holder[0], backend.with_label(images, labels), training=True)
            return score

        def input_grad(images):
            def score(x):
                return ops.sum(losses.logit_of(D.stateless_call(d_tv, holder[0], backend.with_label(x, labels), training=True)[0]))

            return self.jax.grad(score)(images)

        return d_call, input_grad, holder

    def _draw(self, state, n):
        """`draw` from the seed state in `state` -> (random numbers, the state with the advanced seed)."""
        seed = self.gan.seed_generator.state
        with keras.StatelessScope(state_mapping=[(seed, state["misc"][1])]) as scope:
            rand = draw(self.gan, n)
            return rand, {**state, "misc": [state["misc"][0], scope.get_current_value(seed)]}

    def _step(self, state, batch, r1_due, rand=None):
        gan, c, jax = self.gan, self.gan.config, self.jax
        (real, labels), G = split_batch(batch), gan.generator
        n = real.shape[0]
        if rand is None:
            rand, state = self._draw(state, n)
        s = {k: list(v) for k, v in state.items()}
        p, seed_state = s["misc"]
        seen = self._seen(s["d_opt"], n)  # before this step's update
        fake, s["g_ntv"] = G.stateless_call(s["g_tv"], s["g_ntv"], backend.with_label(rand["z_d"], labels), training=True)  # [N, 128, 128, 1]
        fake = ops.cast(fake, "float32")  # compute dtype under a mixed policy: bf16 / f16

        def d_total(d_tv, d_ntv):
            d_call, input_grad, holder = self._d_caller(d_tv, d_ntv, labels)
            total, aux = losses.d_objective(c, gan.policy, d_call, input_grad, real, fake, rand, p, r1_due, seen)
            return self._scaled(gan.d_optimizer, s["d_opt"], total), (aux, holder[0])

        (_, ((d_loss, d_real, d_fake), s["d_ntv"])), grads = jax.value_and_grad(d_total, has_aux=True)(s["d_tv"], s["d_ntv"])
        s["d_tv"], s["d_opt"] = gan.d_optimizer.stateless_apply(s["d_opt"], grads, s["d_tv"])
        g_loss = ops.zeros(())
        for k in range(c.g_steps):
            def g_total(g_tv, g_ntv, d_ntv, k=k):
                images, g_ntv = G.stateless_call(g_tv, g_ntv, backend.with_label(rand["z_g"][k], labels), training=True)
                d_call, _, holder = self._d_caller(s["d_tv"], d_ntv, labels)
                real_rand = rand.get("aug_g_real", [None] * c.g_steps)[k]
                loss = losses.g_objective(c, gan.policy, d_call, ops.cast(images, "float32"), rand["aug_g"][k], p, real, real_rand)
                return self._scaled(gan.g_optimizer, s["g_opt"], loss), (g_ntv, holder[0], loss)

            (_, (s["g_ntv"], s["d_ntv"], g_loss)), grads = jax.value_and_grad(g_total, has_aux=True)(s["g_tv"], s["g_ntv"], s["d_ntv"])
            s["g_tv"], s["g_opt"] = gan.g_optimizer.stateless_apply(s["g_opt"], grads, s["g_tv"])
        if gan.ema_generator is not None:
            s["ema_tv"] = losses.ema(losses.ema_decay(c, seen, n), s["ema_tv"], s["g_tv"])
            s["ema_ntv"] = list(s["g_ntv"])
        p_new, r_t = losses.ada_update(c, p, d_real, n, seen)
        s["misc"] = [p_new, seed_state]
        return s, losses.step_logs(d_loss, g_loss, d_real, d_fake, r_t, p_new)


# ---------------------------------------------------------------- gradients of a function of inputs (projection)





