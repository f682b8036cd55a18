"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

Every op is applied per image with probability `p` and is differentiable w.r.t. the images, so the
same augmentation can be applied to real and generated batches. Randomness is stateless: the same
`seed` tensor gives the same augmentation, which keeps resumed runs identical to uninterrupted ones.
Colour/saturation ops are left out: they do nothing on one-channel CT.
"""
import tensorflow as tf

OPS = ("translation", "cutout", "brightness", "contrast")


def parse_policy(policy):
    """'translation,cutout' -> ('translation', 'cutout'); unknown names raise ValueError."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; choose from {', '.join(OPS)}")
    return names


def augment(images, policy, p, seed):
    """images [N, H, W, 1] in [-1, 1]; policy tuple of op names; p scalar; seed int tensor [2]."""
    for i, name in enumerate(policy):
        op_seed = tf.random.experimental.stateless_fold_in(seed, i)
        images = _OPS[name](images, p, op_seed)
    return images


def _apply_mask(images, p, seed):
    n = tf.shape(images)[0]
    chosen = tf.random.stateless_uniform([n, 1, 1, 1], seed=seed) < p  # [N, 1, 1, 1]
    return tf.cast(chosen, images.dtype)


def _blend(images, changed, p, seed):
    mask = _apply_mask(images, p, tf.random.experimental.stateless_fold_in(seed, 99))
    return mask * changed + (1.0 - mask) * images


def _brightness(images, p, seed):
    n = tf.shape(images)[0]
    shift = tf.random.stateless_uniform([n, 1, 1, 1], seed=seed, minval=-0.25, maxval=0.25)  # [N, 1, 1, 1]
    return _blend(images, images + shift, p, seed)


def _contrast(images, p, seed):
    n = tf.shape(images)[0]
    factor = tf.random.stateless_uniform([n, 1, 1, 1], seed=seed, minval=0.6, maxval=1.4)  # [N, 1, 1, 1]
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return _blend(images, (images - mean) * factor + mean, p, seed)


def _translation(images, p, seed, ratio=0.125):
    """Shift by up to `ratio` of the size, filling with black (-1), as CT background is black."""
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    max_dy, max_dx = tf.cast(tf.cast(h, tf.float32) * ratio, tf.int32), tf.cast(tf.cast(w, tf.float32) * ratio, tf.int32)
    s1, s2 = tf.random.experimental.stateless_fold_in(seed, 1), tf.random.experimental.stateless_fold_in(seed, 2)
    dy = tf.random.stateless_uniform([n, 1, 1], seed=s1, minval=-max_dy, maxval=max_dy + 1, dtype=tf.int32)  # [N, 1, 1]
    dx = tf.random.stateless_uniform([n, 1, 1], seed=s2, minval=-max_dx, maxval=max_dx + 1, dtype=tf.int32)
    ys = tf.range(h)[None, :, None] - dy  # [N, H, 1] source row
    xs = tf.range(w)[None, None, :] - dx  # [N, 1, W] source column
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)  # [N, H, W]
    ys_c = tf.clip_by_value(ys, 0, h - 1) + tf.zeros_like(xs)  # [N, H, W]
    xs_c = tf.clip_by_value(xs, 0, w - 1) + tf.zeros_like(ys)  # [N, H, W]
    batch = tf.broadcast_to(tf.range(n)[:, None, None], tf.shape(ys_c))  # [N, H, W]
    moved = tf.gather_nd(images, tf.stack([batch, ys_c, xs_c], axis=-1))  # [N, H, W, 1]
    moved = tf.where(inside[..., None], moved, -tf.ones_like(moved))
    return _blend(images, moved, p, seed)


def _cutout(images, p, seed, ratio=0.5):
    """Blank a random square of `ratio` of the size (value 0, mid-grey), as DiffAugment does."""
    n, h, w = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    cy = tf.random.stateless_uniform([n, 1, 1], seed=tf.random.experimental.stateless_fold_in(seed, 1), maxval=h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([n, 1, 1], seed=tf.random.experimental.stateless_fold_in(seed, 2), maxval=w, dtype=tf.int32)
    half_h, half_w = tf.cast(tf.cast(h, tf.float32) * ratio / 2, tf.int32), tf.cast(tf.cast(w, tf.float32) * ratio / 2, tf.int32)
    rows = tf.abs(tf.range(h)[None, :, None] - cy) < half_h  # [N, H, 1]
    cols = tf.abs(tf.range(w)[None, None, :] - cx) < half_w  # [N, 1, W]
    hole = tf.cast(rows & cols, images.dtype)[..., None]  # [N, H, W, 1]
    return _blend(images, images * (1.0 - hole), p, seed)


_OPS = {"translation": _translation, "cutout": _cutout, "brightness": _brightness, "contrast": _contrast}
