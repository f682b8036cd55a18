"""GAN objectives in `keras.ops` (TensorFlow and JAX): adversarial losses, gradient penalties,
the discriminator and generator objectives of one step, the adaptive augmentation probability, the
generator EMA and the schedules over images seen. Nothing here takes a gradient of parameters: the backend's step (`covgan_utils.training.steps`)
does, and hands in `input_grad`, the one backend-specific piece these objectives need (d score / d image).

Schedules (R3GAN): with `schedule_kimg` a value moves from its start to its end value along a cosine over
that many thousand images seen, `start + (end - start) * (1 - cos(pi * t)) / 2`, t = images / length capped
at 1. Images seen are the discriminator's steps so far times the batch, read from the optimizer's step
counter, which checkpoints carry: a resumed run continues every schedule exactly.
"""
import math

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
    if loss == "rpgan":  # relativistic pairing (R3GAN): each real image against the sample paired with it
        return ops.mean(ops.softplus(d_fake - d_real))
    return ops.mean(d_fake) - ops.mean(d_real)  # wgan-gp


def generator_loss(loss, d_fake, d_real=None):
    """Adversarial loss of the generator from the discriminator's logits [N, 1] on its samples (rpgan:
    and on the real images they are paired with, `d_real` [N, 1], which it needs)."""
    if loss == "bce":  # BCE against the 'real' label, on probabilities as the paper's Keras code
        p_fake = ops.sigmoid(d_fake)
        return ops.mean(ops.binary_crossentropy(ops.ones_like(p_fake), p_fake))
    if loss == "non-saturating":
        return ops.mean(ops.softplus(-d_fake))
    if loss == "rpgan":
        if d_real is None:
            raise ValueError("the rpgan generator loss pairs each sample with a real image: pass d_real, its logits [N, 1]")
        return ops.mean(ops.softplus(d_real - d_fake))
    return -ops.mean(d_fake)  # hinge and wgan-gp


def squared_grad_norm(grad):
    """Per-image squared L2 norm of an image gradient [N, H, W, 1] -> [N]."""
    return ops.sum(ops.square(grad), axis=(1, 2, 3))


def r1_penalty(input_grad, real):
    """R1 (Mescheder et al. 2018): E ||d D(x) / d x||^2 on real (augmented) images."""
    return ops.mean(squared_grad_norm(input_grad(real)))


def r2_penalty(input_grad, fake):
    """R2 (the zero-centred penalty on generated data, as R3GAN): E ||d D(x) / d x||^2 on (augmented) samples."""
    return ops.mean(squared_grad_norm(input_grad(fake)))


def gradient_penalty(input_grad, real, fake, eps):
    """WGAN-GP (Gulrajani et al. 2017): E (||grad at a random mix of real and fake|| - 1)^2; eps [N, 1, 1, 1]."""
    mixed = eps * real + (1.0 - eps) * fake  # [N, 128, 128, 1]
    norm = ops.sqrt(squared_grad_norm(input_grad(mixed)) + 1e-12)  # [N]
    return ops.mean(ops.square(norm - 1.0))


def logit_of(output):
    """The real/fake logit [N, 1] of a discriminator's output (fastgan's is [logit, reconstructions...]),
    as float32: under a mixed precision policy losses and penalties are computed in float32."""
    return ops.cast(output[0] if isinstance(output, (list, tuple)) else output, "float32")


def d_objective(config, policy, d_call, input_grad, real, fake, rand, p, r1_due, images=0.0):
    """Discriminator objective of one step -> (total, (adversarial loss, d_real [N, 1], d_fake [N, 1])).

    `d_call(images)` runs the discriminator in training mode (class labels, if any, bound in); `rand`
    holds the step's random draws; `r1_due` (a Python bool) says whether this is a lazy R1/R2 step;
    `images` (images seen before this step) places the R1/R2 weight on its schedule. A
    self-supervised (fastgan) discriminator also reconstructs the real images it saw: its L1 error,
    weighted by `recon_weight`, joins the objective (real images only). The logits returned are
    `centred` (rpgan: about their midpoint), for the statistics and ADA."""
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
    if r1_due:
        weight = 0.5 * max(config.r1_every, 1) * gamma_scale(config, images)  # lazy: k times the weight every k-th step
        if config.r1_gamma > 0:
            total = total + weight * config.r1_gamma * r1_penalty(input_grad, real_aug)
        if config.r2_gamma > 0:
            total = total + weight * config.r2_gamma * r2_penalty(input_grad, fake_aug)
    return total, (d_loss, *centred(config.loss, d_real, d_fake))


def g_objective(config, policy, d_call, fake, aug_rand, p, real=None, real_rand=None):
    """Generator objective of one generator update: the adversarial loss on augmented samples (rpgan: paired
    with the step's `real` images, augmented by `real_rand`)."""
    fake_aug = augment_lib.apply(fake, policy, p, aug_rand) if policy else fake
    d_real = None
    if config.loss == "rpgan":
        real_aug = augment_lib.apply(real, policy, p, real_rand) if policy else real
        d_real = logit_of(d_call(real_aug))  # [N, 1]
    return generator_loss(config.loss, logit_of(d_call(fake_aug)), d_real)


def centred(loss, d_real, d_fake):
    """Logits [N, 1] as the statistics and ADA read them: rpgan's depend only on differences, so they are
    taken about the midpoint of the batch's mean real and fake logits; other losses' as they are."""
    if loss != "rpgan":
        return d_real, d_fake
    mid = 0.5 * (ops.mean(d_real) + ops.mean(d_fake))
    return d_real - mid, d_fake - mid


def regularised(config):
    """True when the discriminator has a zero-centred penalty (R1 or R2)."""
    return config.r1_gamma > 0 or config.r2_gamma > 0


def r1_is_due(config, d_step):
    """Lazy R1/R2 (StyleGAN2): the penalties run on every `r1_every`-th discriminator step (0-based count)."""
    return regularised(config) and (config.r1_every <= 1 or d_step % config.r1_every == 0)


def ada_update(config, p, d_real, n, images=0.0):
    """New augmentation probability from r_t = E[sign(D(real))] (Karras et al. 2020) -> (p, r_t). Without
    ADA, with `augment_p_end` set, p follows its schedule to the value for the `images` seen after this step."""
    r_t = ops.mean(ops.sign(d_real))
    if config.ada_target <= 0 or not config.augment:
        if config.augment and config.augment_p_end and config.schedule_kimg:
            return ops.cast(scheduled(config, config.augment_p, config.augment_p_end, images + n), "float32"), r_t
        return p, r_t
    step = ops.sign(r_t - config.ada_target) * (n / (config.ada_kimg * 1000.0))
    return ops.clip(p + step, 0.0, 1.0), r_t


def ema(decay, averaged, current):
    """Exponential moving average of weight lists: decay * averaged + (1 - decay) * current."""
    return [decay * a + (1.0 - decay) * c for a, c in zip(averaged, current)]


def uses_ema(config):
    """True when training keeps an EMA generator (by decay or by images seen)."""
    return config.ema_decay > 0 or config.ema_kimg > 0


def ema_decay(config, images, n):
    """The EMA decay of a step over `n` images after `images` seen: `ema_decay`, or by half-life,
    0.5 ** (n / half-life) with half-life ema_kimg * 1000 images (rising from 0 along the schedule when there
    is one, R3GAN; at most ema_rampup * images when set, StyleGAN2-ADA)."""
    if not config.ema_kimg:
        return config.ema_decay
    half_life = config.ema_kimg * 1000.0 * (progress(config, images) if config.schedule_kimg else 1.0)
    if config.ema_rampup:
        half_life = ops.minimum(half_life, images * config.ema_rampup)
    return ops.power(0.5, n / ops.maximum(half_life, 1e-8))


# ---------------------------------------------------------------- schedules over images seen

def progress(config, images):
    """How far along its cosine a schedule is after `images` seen: 0 -> 1 over schedule_kimg * 1000 images
    (float32 scalar; 0 without a schedule)."""
    if not config.schedule_kimg:
        return ops.zeros(())
    t = ops.clip(ops.cast(images, "float32") / (config.schedule_kimg * 1000.0), 0.0, 1.0)
    return 0.5 * (1.0 - ops.cos(math.pi * t))


def scheduled(config, start, end, images):
    """A scheduled value: `start` moving to `end` along the cosine (`start` without a schedule)."""
    return start + (end - start) * progress(config, images)


def gamma_scale(config, images):
    """The R1/R2 weights' factor after `images` seen: 1 moving to gamma_end_ratio (1 without a schedule)."""
    return scheduled(config, 1.0, config.gamma_end_ratio, images) if config.schedule_kimg else 1.0


LOG_KEYS = ("d_loss", "g_loss", "d_acc_real", "d_acc_fake", "r_t", "augment_p")  # step_logs' keys, each a float32 scalar


def step_logs(d_loss, g_loss, d_real, d_fake, r_t, p):
    """The per-step numbers written to stats.jsonl (averaged per epoch): LOG_KEYS, float32 scalars."""
    values = (d_loss, g_loss, ops.mean(ops.cast(d_real > 0, "float32")), ops.mean(ops.cast(d_fake < 0, "float32")), r_t, p)
    return {k: ops.cast(v, "float32") for k, v in zip(LOG_KEYS, values)}
