"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

Written in `keras.ops`, so the same code runs under TensorFlow and JAX. Every op is applied per image
with probability `p` and is differentiable w.r.t. the images, so the same augmentation can be applied
to real and generated batches. Randomness is drawn first (`draw`, from `keras.random` with a seed or
`SeedGenerator`) and applied second (`apply`), so a training step draws all its random numbers before
any gradient is taken and a resumed run draws the same ones. Each op reads DRAWS_PER_OP uniform numbers
per image: u[:, 0] decides whether it is applied (u[:, 0] < p), u[:, 1] and u[:, 2] set its parameters.

Ops (`OPS`; the alias "ada" expands to ADA's pipeline, in ADA's order, see `ALIASES`):

- `xflip`             mirror left-right (exact pixel permutation)
- `int_translation`   ADA's integer shift by up to 0.125 of the size, reflect-padded (exact pixel permutation)
- `translation`       DiffAugment's integer shift by up to 0.125 of the size, filled black (-1)
- `iso_scale`         isotropic scaling, lognormal with std SCALE_STD = 0.2 ln 2
- `rotate`            rotation uniform in +-ROTATE_DEGREES = 15 degrees (CT slices are roughly upright)
- `aniso_scale`       x scaled by a lognormal factor (std 0.2 ln 2), y by its inverse
- `frac_translation`  shift by a normal fraction of the size (std TRANSLATE_STD = 0.125 on each axis)
- `brightness`        add a uniform shift in [-0.25, 0.25)
- `contrast`          scale about the image mean by a uniform factor in [0.6, 1.4)
- `gamma`             map to [0, 1], raise to a lognormal gamma (std GAMMA_STD = 0.2 ln 2), map back
- `cutout`            blank a square of half the size (value 0)

The four interpolating geometric ops (iso_scale, rotate, aniso_scale, frac_translation) resample with
bilinear weights on a reflect-padded image (`warp`), so the border does not reveal the augmentation.
Consecutive geometric ops in a policy are composed into one 3x3 matrix per image and the image is
resampled once, as ADA does (less blur than resampling after each op). Colour/saturation ops are left
out: they do nothing on one-channel CT.
"""
import itertools
import math

import keras
from keras import ops

from covgan_utils import config

OPS, ALIASES = config.AUGMENT_OPS, config.AUGMENT_ALIASES  # the names are the config's vocabulary
DRAWS_PER_OP = 3  # uniform numbers per image and op: [apply?, parameter 1, parameter 2]
SCALE_STD = 0.2 * math.log(2)  # std of log scale factors (iso_scale, aniso_scale), as ADA
ROTATE_DEGREES = 15.0  # rotate draws its angle uniformly in [-15, 15) degrees
TRANSLATE_STD = 0.125  # std of frac_translation, as a fraction of the image size, as ADA
GAMMA_STD = 0.2 * math.log(2)  # std of log gamma


def parse_policy(policy):
    """'translation,cutout' -> ('translation', 'cutout'); 'ada' expands to ALIASES['ada']; unknown names raise ValueError."""
    names = []
    for name in (part.strip() for part in (policy or "").split(",")):
        if name:
            names.extend(ALIASES.get(name, (name,)))
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown augmentation op {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(OPS)} or the alias {', '.join(ALIASES)}")
    return tuple(names)


def draw(n, policy, seed):
    """Uniform [n, len(policy), DRAWS_PER_OP] in [0, 1): everything random one `apply` call needs."""
    return keras.random.uniform((n, max(len(policy), 1), DRAWS_PER_OP), seed=seed)


def apply(images, policy, p, u):
    """images [N, H, W, 1] in [-1, 1]; policy tuple of op names; p scalar; u from `draw`.

    Runs of consecutive geometric ops are composed and resampled once (see the module docstring).
    """
    for start, stop in _runs(policy):
        if policy[start] in _MATRICES:
            images = _geometric(images, policy[start:stop], p, u[:, start:stop, :])
        else:
            images = _OPS[policy[start]](images, p, u[:, start, :])
    return images


def augment(images, policy, p, seed):
    """`apply` with freshly drawn randomness (a convenience for single calls)."""
    return apply(images, policy, p, draw(ops.shape(images)[0], policy, seed))


def warp(images, matrix):
    """Resample images [N, H, W, 1] through per-image affine matrices [N, 2, 3].

    Coordinates are normalised, x (right) and y (down) in [-1, 1] from edge to edge, pixel centres at
    (2 i + 1) / size - 1. Output pixel (x, y) takes the source at matrix @ [x, y, 1] (the inverse of
    the content's motion), with bilinear weights; out-of-range samples are mirrored back into the
    image (reflect padding, edge pixel not repeated). Differentiable w.r.t. the images.
    """
    h, w = images.shape[1], images.shape[2]
    gx, gy = _pixel_grid(h, w)  # [1, H*W] each
    m = ops.cast(matrix, "float32")
    sx = m[:, 0, 0:1] * gx + m[:, 0, 1:2] * gy + m[:, 0, 2:3]  # [N, H*W] normalised source x
    sy = m[:, 1, 0:1] * gx + m[:, 1, 1:2] * gy + m[:, 1, 2:3]  # [N, H*W] normalised source y
    px, py = ((sx + 1.0) * w - 1.0) / 2.0, ((sy + 1.0) * h - 1.0) / 2.0  # [N, H*W] in pixels
    x0, y0 = ops.floor(px), ops.floor(py)
    fx = ops.cast(px - x0, images.dtype)  # [N, H*W] bilinear weight of the right neighbour
    fy = ops.cast(py - y0, images.dtype)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    cols = (_reflect(x0, w), _reflect(x0 + 1, w))  # [N, H*W] each
    rows = (_reflect(y0, h), _reflect(y0 + 1, h))
    top = (1.0 - fx) * _pick(images, rows[0] * w + cols[0]) + fx * _pick(images, rows[0] * w + cols[1])
    bottom = (1.0 - fx) * _pick(images, rows[1] * w + cols[0]) + fx * _pick(images, rows[1] * w + cols[1])
    return ops.reshape((1.0 - fy) * top + fy * bottom, (-1, h, w, 1))  # [N, H, W, 1]


# ---------------------------------------------------------------- helpers

def _runs(policy):
    """(start, stop) of each step of `apply`: a run of consecutive geometric ops, or one other op."""
    start = 0
    for geometric, group in itertools.groupby(policy, key=lambda name: name in _MATRICES):
        size = len(list(group))
        yield from [(start, start + size)] if geometric else [(k, k + 1) for k in range(start, start + size)]
        start += size


def _mix(images, changed, chosen):
    chosen = ops.cast(chosen, images.dtype)[:, None, None, None]  # [N, 1, 1, 1], 0 or 1
    return chosen * changed + (1.0 - chosen) * images


def _blend(images, changed, p, u):
    return _mix(images, changed, u[:, 0] < p)


def _integer(u, low, high):
    """Uniform integers in [low, high] from uniform floats u in [0, 1)."""
    return ops.cast(ops.floor(u * (high - low + 1)), "int32") + low


def _normal(u):
    """Standard normal numbers from uniform floats u in [0, 1) (inverse CDF, clipped to +-4.75)."""
    return math.sqrt(2.0) * ops.erfinv(2.0 * ops.clip(u, 1e-6, 1.0 - 1e-6) - 1.0)


def _reflect(index, size):
    """Mirror integer indices into [0, size): ... 2 1 | 0 1 ... size-1 | size-2 ... (numpy 'reflect')."""
    if size == 1:
        return ops.zeros_like(index)
    period = 2 * (size - 1)
    index = ops.mod(index, period)
    return ops.where(index >= size, period - index, index)


def _pick(images, index):
    """Pixels of images [N, H, W, 1] at flat indices [N, K] -> [N, K]."""
    flat = ops.reshape(images, (-1, images.shape[1] * images.shape[2]))  # [N, H*W]
    return ops.take_along_axis(flat, index, axis=1)


def _pixel_grid(h, w):
    """Normalised pixel-centre coordinates, x and y each [1, H*W] (row-major)."""
    x = (2.0 * ops.arange(w, dtype="float32") + 1.0) / w - 1.0  # [W]
    y = (2.0 * ops.arange(h, dtype="float32") + 1.0) / h - 1.0  # [H]
    gx = ops.reshape(ops.tile(x[None, :], (h, 1)), (1, h * w))  # [1, H*W]
    gy = ops.reshape(ops.tile(y[:, None], (1, w)), (1, h * w))
    return gx, gy


def _matrix(a, b, c, d, e, f):
    """Per-image 3x3 matrices [[a, b, c], [d, e, f], [0, 0, 1]] from [N] entries -> [N, 3, 3]."""
    zero, one = ops.zeros_like(a), ops.ones_like(a)
    return ops.stack([ops.stack([a, b, c], axis=-1), ops.stack([d, e, f], axis=-1),
                      ops.stack([zero, zero, one], axis=-1)], axis=1)


def _identity(u):
    zero, one = ops.zeros_like(u[:, 0]), ops.ones_like(u[:, 0])
    return _matrix(one, zero, zero, zero, one, zero)  # [N, 3, 3]


# ---------------------------------------------------------------- pixel ops

def _brightness(images, p, u):
    shift = (u[:, 1] * 0.5 - 0.25)[:, None, None, None]  # [N, 1, 1, 1] in [-0.25, 0.25)
    return _blend(images, images + shift, p, u)


def _contrast(images, p, u):
    factor = (0.6 + 0.8 * u[:, 1])[:, None, None, None]  # [N, 1, 1, 1] in [0.6, 1.4)
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    return _blend(images, (images - mean) * factor + mean, p, u)


def _gamma(images, p, u):
    """x = (image + 1) / 2 -> x ** g -> 2 x - 1, log g ~ N(0, GAMMA_STD) from u[:, 1].

    Values that brightness/contrast pushed below 0 keep their sign (sign(x) |x| ** g), so the map
    stays finite and monotonic everywhere.
    """
    g = ops.exp(GAMMA_STD * _normal(u[:, 1]))[:, None, None, None]  # [N, 1, 1, 1]
    x = (images + 1.0) * 0.5  # [N, H, W, 1]
    mapped = ops.sign(x) * ops.power(ops.maximum(ops.abs(x), 1e-6), g)
    return _blend(images, 2.0 * mapped - 1.0, p, u)


def _xflip(images, p, u):
    """Mirror left-right."""
    return _blend(images, ops.flip(images, axis=2), p, u)


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


def _int_translation(images, p, u, ratio=0.125):
    """Shift by whole pixels, up to `ratio` of the size (dy from u[:, 1], dx from u[:, 2]), reflect-padded (ADA)."""
    h, w = images.shape[1], images.shape[2]
    dy = _integer(u[:, 1], -int(h * ratio), int(h * ratio))[:, None, None]  # [N, 1, 1]
    dx = _integer(u[:, 2], -int(w * ratio), int(w * ratio))[:, None, None]
    rows = _reflect(ops.arange(h, dtype="int32")[None, :, None] - dy, h)  # [N, H, 1] source row
    cols = _reflect(ops.arange(w, dtype="int32")[None, None, :] - dx, w)  # [N, 1, W] source column
    index = ops.reshape(rows * w + cols, (-1, h * w))  # [N, H*W] flat source pixel
    return _blend(images, ops.reshape(_pick(images, index), (-1, h, w, 1)), p, u)


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


# ---------------------------------------------------------------- geometric ops (sampling matrices)
# Each returns [N, 3, 3] mapping output coordinates to source coordinates (the inverse of the motion
# of the content), in `warp`'s normalised coordinates.

def _iso_scale_matrix(u):
    """Content grows by s, log s ~ N(0, SCALE_STD) from u[:, 1]."""
    s = ops.exp(SCALE_STD * _normal(u[:, 1]))  # [N]
    zero = ops.zeros_like(s)
    return _matrix(1.0 / s, zero, zero, zero, 1.0 / s, zero)


def _rotate_matrix(u):
    """Content turns counterclockwise as displayed by an angle uniform in [-ROTATE_DEGREES, ROTATE_DEGREES) from u[:, 1].

    The turn is in normalised coordinates: a true rotation on square images (the project's 128x128).
    """
    angle = math.radians(ROTATE_DEGREES) * (2.0 * u[:, 1] - 1.0)  # [N]
    c, s, zero = ops.cos(angle), ops.sin(angle), ops.zeros_like(angle)
    return _matrix(c, -s, zero, s, c, zero)


def _aniso_scale_matrix(u):
    """Content widens by s and shortens by 1 / s, log s ~ N(0, SCALE_STD) from u[:, 1]."""
    s = ops.exp(SCALE_STD * _normal(u[:, 1]))  # [N]
    zero = ops.zeros_like(s)
    return _matrix(1.0 / s, zero, zero, zero, s, zero)


def _frac_translation_matrix(u):
    """Content moves by (tx, ty) of the size, each ~ N(0, TRANSLATE_STD), from u[:, 1] (x, right) and u[:, 2] (y, down)."""
    tx, ty = TRANSLATE_STD * _normal(u[:, 1]), TRANSLATE_STD * _normal(u[:, 2])  # [N] each
    zero, one = ops.zeros_like(tx), ops.ones_like(tx)
    return _matrix(one, zero, -2.0 * tx, zero, one, -2.0 * ty)  # a fraction f of the size is 2 f normalised


def _geometric(images, names, p, u):
    """Apply a run of geometric ops (u [N, len(names), DRAWS_PER_OP]) with one composed resampling.

    Each op is chosen per image with probability p; unchosen ops contribute the identity; images for
    which no op was chosen are returned unchanged (bit for bit).
    """
    chosen = u[:, :, 0] < p  # [N, k]
    matrix = _identity(u[:, 0, :])  # [N, 3, 3]
    for k, name in enumerate(names):
        step = ops.where(chosen[:, k, None, None], _MATRICES[name](u[:, k, :]), _identity(u[:, k, :]))  # [N, 3, 3]
        matrix = ops.matmul(matrix, step)  # inverse of (later motion after earlier motion)
    return _mix(images, warp(images, matrix[:, :2, :]), ops.any(chosen, axis=1))


def _single_geometric(name):
    def op(images, p, u):
        return _geometric(images, (name,), p, u[:, None, :])

    op.__doc__ = _MATRICES[name].__doc__
    return op


_MATRICES = {"iso_scale": _iso_scale_matrix, "rotate": _rotate_matrix, "aniso_scale": _aniso_scale_matrix,
             "frac_translation": _frac_translation_matrix}
_OPS = {"translation": _translation, "cutout": _cutout, "brightness": _brightness, "contrast": _contrast,
        "xflip": _xflip, "int_translation": _int_translation, "gamma": _gamma,
        **{name: _single_geometric(name) for name in _MATRICES}}
