"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

Written in `keras.ops`, so the same code runs under TensorFlow and JAX. Every op is applied per image
with probability `p` and is differentiable w.r.t. the images, so the same augmentation can be applied
to real and generated batches. Randomness is drawn first (`draw`, from `keras.random` with a seed or
`SeedGenerator`) and applied second (`apply`), so a training step draws all its random numbers before
any gradient is taken and a resumed run draws the same ones. Colour/saturation ops are left out: they
do nothing on one-channel CT.
"""
import keras
from keras import ops

OPS = ("translation", "cutout", "brightness", "contrast")
DRAWS_PER_OP = 3  # uniform numbers per image and op: [apply?, parameter 1, parameter 2]


def parse_policy(policy):
    """'translation,cutout' -> ('translation', 'cutout'); unknown names raise ValueError."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {', '.join(OPS)}")
    return names


def draw(n, policy, seed):
    """Uniform [n, len(policy), 3] in [0, 1): everything random one `apply` call needs."""
    return keras.random.uniform((n, max(len(policy), 1), DRAWS_PER_OP), seed=seed)


def apply(images, policy, p, u):
    """images [N, H, W, 1] in [-1, 1]; policy tuple of op names; p scalar; u from `draw`."""
    for i, name in enumerate(policy):
        images = _OPS[name](images, p, u[:, i, :])
    return images


def augment(images, policy, p, seed):
    """`apply` with freshly drawn randomness (a convenience for single calls)."""
    return apply(images, policy, p, draw(ops.shape(images)[0], policy, seed))


def _blend(images, changed, p, u):
    chosen = ops.cast(u[:, 0] < p, images.dtype)[:, None, None, None]  # [N, 1, 1, 1]
    return chosen * changed + (1.0 - chosen) * images


def _brightness(images, p, u):
    shift = (u[:, 1] * 0.5 - 0.25)[:, None, None, None]  # [N, 1, 1, 1] in [-0.25, 0.25)
    return _blend(images, images + shift, p, u)


def _contrast(images, p, u):
    factor = (0.6 + 0.8 * u[:, 1])[:, None, None, None]  # [N, 1, 1, 1] in [0.6, 1.4)
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    return _blend(images, (images - mean) * factor + mean, p, u)


def _integer(u, low, high):
    """Uniform integers in [low, high] from uniform floats u in [0, 1)."""
    return ops.cast(ops.floor(u * (high - low + 1)), "int32") + low


def _translation(images, p, u, ratio=0.125):
    """Shift by up to `ratio` of the size, filling with black (-1), as CT background is black."""
    n, h, w = ops.shape(images)[0], images.shape[1], images.shape[2]
    max_dy, max_dx = int(h * ratio), int(w * ratio)
    dy = _integer(u[:, 1], -max_dy, max_dy)[:, None, None]  # [N, 1, 1]
    dx = _integer(u[:, 2], -max_dx, max_dx)[:, None, None]
    ys = ops.arange(h, dtype="int32")[None, :, None] - dy  # [N, H, 1] source row
    xs = ops.arange(w, dtype="int32")[None, None, :] - dx  # [N, 1, W] source column
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)  # [N, H, W]
    index = ops.clip(ys, 0, h - 1) * w + ops.clip(xs, 0, w - 1)  # [N, H, W] flat source pixel
    flat = ops.reshape(images, (n, h * w))  # [N, H*W]
    moved = ops.reshape(ops.take_along_axis(flat, ops.reshape(index, (n, h * w)), axis=1), (n, h, w, 1))
    moved = ops.where(inside[..., None], moved, -ops.ones_like(moved))
    return _blend(images, moved, p, u)


def _cutout(images, p, u, ratio=0.5):
    """Blank a random square of `ratio` of the size (value 0, mid-grey), as DiffAugment does."""
    h, w = images.shape[1], images.shape[2]
    cy = _integer(u[:, 1], 0, h - 1)[:, None, None]  # [N, 1, 1]
    cx = _integer(u[:, 2], 0, w - 1)[:, None, None]
    half_h, half_w = int(h * ratio / 2), int(w * ratio / 2)
    rows = ops.abs(ops.arange(h, dtype="int32")[None, :, None] - cy) < half_h  # [N, H, 1]
    cols = ops.abs(ops.arange(w, dtype="int32")[None, None, :] - cx) < half_w  # [N, 1, W]
    hole = ops.cast(rows & cols, images.dtype)[..., None]  # [N, H, W, 1]
    return _blend(images, images * (1.0 - hole), p, u)


_OPS = {"translation": _translation, "cutout": _cutout, "brightness": _brightness, "contrast": _contrast}
