"""GAN objectives in `keras.ops` (TensorFlow and JAX): adversarial losses, gradient penalties,
the discriminator and generator objectives of one step, the adaptive augmentation probability and
the generator EMA. Nothing here takes a gradient of parameters: the backend's step (`covgan_utils.training.steps`)
does, and hands in `input_grad`, the one backend-specific piece these objectives need (d score / d image).
"""
from keras import ops

from covgan_utils.config import LOSSES  # noqa: F401  (the loss names are the config's vocabulary)
from covgan_utils.nets import fastgan
from covgan_utils.training import augment as augment_lib


def discriminator_loss(loss, d_real, d_fake, smoothing=0.0):
    """Adversarial loss of the discriminator from logits [N, 1] (wgan-gp: without its penalty)."""
    if loss == "bce":  # the paper's: cross-entropy on sigmoid probabilities (clipped, so it can saturate)
        p_real, p_fake = ops.sigmoid(d_real), ops.sigmoid(d_fake)
        real_term = ops.binary_crossentropy(ops.ones_like(p_real) * (1.0 - smoothing), p_real)
        return ops.mean(real_term) + ops.mean(ops.binary_crossentropy(ops.zeros_like(p_fake), p_fake))
    if loss == "non-saturating":  # the same on logits (softplus): never saturates
        real_term = (1.0 - smoothing) * ops.softplus(-d_real) + smoothing * ops.softplus(d_real)
        return ops.mean(real_term) + ops.mean(ops.softplus(d_fake))
    if loss == "hinge":
        return ops.mean(ops.relu(1.0 - d_real)) + ops.mean(ops.relu(1.0 + d_fake))
    return ops.mean(d_fake) - ops.mean(d_real)  # wgan-gp


def generator_loss(loss, d_fake):
    """Adversarial loss of the generator from the discriminator's logits [N, 1] on its samples."""
    if loss == "bce":  # BCE against the 'real' label, on probabilities as the paper's Keras code
        p_fake = ops.sigmoid(d_fake)
        return ops.mean(ops.binary_crossentropy(ops.ones_like(p_fake), p_fake))
    if loss == "non-saturating":
        return ops.mean(ops.softplus(-d_fake))
    return -ops.mean(d_fake)  # hinge and wgan-gp


def squared_grad_norm(grad):
    """Per-image squared L2 norm of an image gradient [N, H, W, 1] -> [N]."""
    return ops.sum(ops.square(grad), axis=(1, 2, 3))


def r1_penalty(input_grad, real):
    """R1 (Mescheder et al. 2018): E ||d D(x) / d x||^2 on real (augmented) images."""
    return ops.mean(squared_grad_norm(input_grad(real)))


def gradient_penalty(input_grad, real, fake, eps):
    """WGAN-GP (Gulrajani et al. 2017): E (||grad at a random mix of real and fake|| - 1)^2; eps [N, 1, 1, 1]."""
    mixed = eps * real + (1.0 - eps) * fake  # [N, 128, 128, 1]
    norm = ops.sqrt(squared_grad_norm(input_grad(mixed)) + 1e-12)  # [N]
    return ops.mean(ops.square(norm - 1.0))


def logit_of(output):
    """The real/fake logit [N, 1] of a discriminator's output (fastgan's is [logit, reconstructions...]),
    as float32: under a mixed precision policy losses and penalties are computed in float32."""
    return ops.cast(output[0] if isinstance(output, (list, tuple)) else output, "float32")


def d_objective(config, policy, d_call, input_grad, real, fake, rand, p, r1_due):
    """Discriminator objective of one step -> (total, (adversarial loss, d_real [N, 1], d_fake [N, 1])).

    `d_call(images)` runs the discriminator in training mode (class labels, if any, bound in); `rand`
    holds the step's random draws; `r1_due` (a Python bool) says whether this is a lazy-R1 step. A
    self-supervised (fastgan) discriminator also reconstructs the real images it saw: its L1 error,
    weighted by `recon_weight`, joins the objective (real images only)."""
    real_aug = augment_lib.apply(real, policy, p, rand["aug_real"]) if policy else real
    fake_aug = augment_lib.apply(fake, policy, p, rand["aug_fake"]) if policy else fake
    out_real = d_call(real_aug)
    d_real = logit_of(out_real)  # [N, 1]
    d_fake = logit_of(d_call(fake_aug))  # [N, 1]
    d_loss = discriminator_loss(config.loss, d_real, d_fake, config.label_smoothing)
    total = d_loss
    if isinstance(out_real, (list, tuple)) and config.recon_weight > 0:
        total = total + config.recon_weight * fastgan.reconstruction_loss(real_aug, *[ops.cast(r, "float32") for r in out_real[1:]])
    if config.loss == "wgan-gp":
        total = total + config.gp_weight * gradient_penalty(input_grad, real_aug, fake_aug, rand["gp_eps"])
    if config.r1_gamma > 0 and r1_due:
        total = total + 0.5 * config.r1_gamma * max(config.r1_every, 1) * r1_penalty(input_grad, real_aug)
    return total, (d_loss, d_real, d_fake)


def g_objective(config, policy, d_call, fake, aug_rand, p):
    """Generator objective of one generator update: the adversarial loss on augmented samples."""
    fake_aug = augment_lib.apply(fake, policy, p, aug_rand) if policy else fake
    return generator_loss(config.loss, logit_of(d_call(fake_aug)))


def r1_is_due(config, d_step):
    """Lazy R1 (StyleGAN2): the penalty runs on every `r1_every`-th discriminator step (0-based count)."""
    return config.r1_gamma > 0 and (config.r1_every <= 1 or d_step % config.r1_every == 0)


def ada_update(config, p, d_real, n):
    """New augmentation probability from r_t = E[sign(D(real))] (Karras et al. 2020) -> (p, r_t)."""
    r_t = ops.mean(ops.sign(d_real))
    if config.ada_target <= 0 or not config.augment:
        return p, r_t
    step = ops.sign(r_t - config.ada_target) * (n / (config.ada_kimg * 1000.0))
    return ops.clip(p + step, 0.0, 1.0), r_t


def ema(decay, averaged, current):
    """Exponential moving average of weight lists: decay * averaged + (1 - decay) * current."""
    return [decay * a + (1.0 - decay) * c for a, c in zip(averaged, current)]


def step_logs(d_loss, g_loss, d_real, d_fake, r_t, p):
    """The per-step numbers written to stats.jsonl (averaged per epoch)."""
    return {
        "d_loss": d_loss, "g_loss": g_loss,
        "d_acc_real": ops.mean(ops.cast(d_real > 0, "float32")),
        "d_acc_fake": ops.mean(ops.cast(d_fake < 0, "float32")),
        "r_t": r_t, "augment_p": p,
    }
