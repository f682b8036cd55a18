"""FastGAN-style generator and discriminator (Liu et al., ICLR 2021), Keras 3 functional API.

Kept from FastGAN: a generator of nearest-upsample + 3x3 conv + BatchNorm blocks from a GLU-gated 4x4
map, with skip-layer excitation (SLE: a low-resolution map gates the channels of a high-resolution
one); a discriminator of residual down blocks (strided conv path averaged with an avg-pool + 1x1 conv
path) with an SLE of its own; self-supervised reconstruction decoders on the discriminator's 8x8 and
16x16 feature maps, trained on real images only.

Differs (mostly for CPU training): 128x128 one-channel images and small default widths; one conv per
block and leaky ReLU instead of GLU after the 4x4 map (GLU doubles each conv); no noise injection (an
image is a deterministic function of its noise); BatchNorm instead of spectral normalisation in the
discriminator; a pooled logit instead of FastGAN's 5x5 logit map; all four quadrants decoded every call
instead of one random crop; an L1 reconstruction loss instead of LPIPS + MSE (LPIPS weights are not
available offline); optional class conditioning (an embedding concatenated to the noise in the
generator, a projection discriminator after Miyato & Koyama 2018).
"""
import numbers

import keras
from keras import ops

IMAGE_SHAPE = (128, 128, 1)
DECODER_WIDTHS = (16, 8)  # reconstruction decoders: conv blocks at 16 and 32, then upsample + tanh conv at 64
QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")
SLOPE = 0.2
G_SLE = {64: 16, 128: 8}  # generator SLE: gated map size -> size of the map that gates it


@keras.saving.register_keras_serializable(package="covgan")
class GatedLinearUnit(keras.layers.Layer):
    """GLU over the last axis: first half of the channels times the sigmoid of the second half."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)  # two [..., C / 2]
        return a * ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(f"GatedLinearUnit needs an even channel count, got {input_shape[-1]}")
        channels = None if input_shape[-1] is None else input_shape[-1] // 2
        return (*input_shape[:-1], channels)

    def get_config(self):
        return super().get_config()


def _quadrants(x):
    """[N, H, W, C] -> [N, 4, H/2, W/2, C]: top-left, top-right, bottom-left, bottom-right."""
    h, w = x.shape[1] // 2, x.shape[2] // 2
    return ops.stack([x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]], axis=1)


@keras.saving.register_keras_serializable(package="covgan")
class QuadrantsToBatch(keras.layers.Layer):
    """[N, H, W, C] -> [4N, H/2, W/2, C], the quadrants of image n at rows 4n .. 4n + 3 (order of QUADRANTS)."""

    def call(self, x):
        _, h, w, c = x.shape
        return ops.reshape(_quadrants(x), (-1, h // 2, w // 2, c))  # [4N, H/2, W/2, C]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (None if n is None else 4 * n, h // 2, w // 2, c)

    def get_config(self):
        return super().get_config()


@keras.saving.register_keras_serializable(package="covgan")
class BatchToQuadrants(keras.layers.Layer):
    """[4N, h, w, c] -> [N, 4, h, w, c], the inverse fold of QuadrantsToBatch."""

    def call(self, x):
        return ops.reshape(x, (-1, 4, *x.shape[1:]))  # [N, 4, h, w, c]

    def compute_output_shape(self, input_shape):
        n = input_shape[0]
        return (None if n is None else n // 4, 4, *input_shape[1:])

    def get_config(self):
        return super().get_config()


def _check_widths(widths, count, what):
    widths = tuple(widths)
    if len(widths) != count or not all(isinstance(w, numbers.Integral) and w > 0 for w in widths):
        raise ValueError(f"{what} needs {count} positive integer widths, got {widths}")
    return tuple(int(w) for w in widths)


def _check_classes(num_classes):
    if not isinstance(num_classes, numbers.Integral) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")


def _leaky(x, name):
    return keras.layers.LeakyReLU(negative_slope=SLOPE, name=name)(x)


def _label_input():
    return keras.Input((1,), dtype="int32", name="label")  # [N, 1] class index


def _sle(small, big, name):
    """Skip-layer excitation: `small` [N, h, w, c] gates the channels of `big` [N, H, W, C]."""
    pool = small.shape[1] // 4
    g = keras.layers.AveragePooling2D(pool, name=f"{name}_pool")(small)  # [N, 4, 4, c]
    g = keras.layers.Conv2D(big.shape[-1], 4, padding="valid", name=f"{name}_conv")(g)  # [N, 1, 1, C]
    g = _leaky(g, f"{name}_act")
    g = keras.layers.Conv2D(big.shape[-1], 1, activation="sigmoid", name=f"{name}_gate")(g)  # [N, 1, 1, C]
    return keras.layers.Multiply(name=f"{name}_mul")([big, g])  # [N, H, W, C]


# --- generator ---------------------------------------------------------------------------------------


def build_fastgan_generator(latent_dim=100, widths=(256, 128, 64, 32, 16, 8), num_classes=0, name="fastgan_generator"):
    """Noise z [N, latent_dim] (and label [N, 1] when num_classes > 0) -> image [N, 128, 128, 1] in [-1, 1].

    `widths`: channels of the 4x4 map, then of the 8, 16, 32, 64 and 128 maps. A conditional generator
    embeds the class (unit-scale normal init, as large as the noise) and concatenates it to z; its inputs
    are [z, label]. SLE: the 16x16 map gates the 64x64 one and the 8x8 map the 128x128 one.
    """
    widths = _check_widths(widths, 6, "the FastGAN generator (4x4 map, then 8, 16, 32, 64, 128)")
    _check_classes(num_classes)
    if not isinstance(latent_dim, numbers.Integral) or latent_dim < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim!r}")
    z = keras.Input((latent_dim,), name="z")  # [N, latent]
    inputs, x = z, z
    if num_classes:
        label = _label_input()
        inputs, x = [z, label], _concat_label(z, label, num_classes, latent_dim)  # [N, 2 * latent]
    x = _init_block(x, widths[0])  # [N, 4, 4, widths[0]]
    feats = {4: x}
    for i, width in enumerate(widths[1:]):
        x = _g_up_block(x, width, f"up{i}")  # [N, 8 * 2**i, 8 * 2**i, width]
        size = x.shape[1]
        if size in G_SLE:
            x = _sle(feats[G_SLE[size]], x, f"sle{size}")  # gated by the 16x16 (64) or 8x8 (128) map
        feats[size] = x
    x = keras.layers.Conv2D(1, 3, padding="same", activation="tanh", dtype="float32", name="to_image")(x)  # [N, 128, 128, 1]
    return keras.Model(inputs, x, name=name)


def _concat_label(z, label, num_classes, dim):
    init = keras.initializers.RandomNormal(stddev=1.0)
    e = keras.layers.Embedding(num_classes, dim, embeddings_initializer=init, name="label_embed")(label)  # [N, 1, dim]
    e = keras.layers.Flatten(name="label_flat")(e)  # [N, dim]
    return keras.layers.Concatenate(name="z_label")([z, e])  # [N, latent + dim]


def _init_block(x, width):
    x = keras.layers.Dense(4 * 4 * 2 * width, use_bias=False, name="init_dense")(x)  # [N, 32 * width]
    x = keras.layers.Reshape((4, 4, 2 * width), name="init_map")(x)  # [N, 4, 4, 2 * width]
    x = keras.layers.BatchNormalization(name="init_bn")(x)
    return GatedLinearUnit(name="init_glu")(x)  # [N, 4, 4, width]


def _g_up_block(x, width, name):
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_resize")(x)  # [N, 2H, 2W, C]
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)  # [N, 2H, 2W, width]
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return _leaky(x, f"{name}_act")


# --- discriminator -----------------------------------------------------------------------------------


def build_fastgan_discriminator(widths=(16, 32, 64, 128, 256), num_classes=0, name="fastgan_discriminator"):
    """Image [N, 128, 128, 1] (and label [N, 1] when num_classes > 0) -> [logit, rec_whole, rec_quadrants].

    `widths`: channels of the 64, 32, 16 and 8 maps, then of the 4x4 logit head. Outputs: logit [N, 1];
    rec_whole [N, 64, 64, 1], the whole image at half size decoded from the 8x8 map; rec_quadrants
    [N, 4, 64, 64, 1], each full-size 64x64 quadrant (top-left, top-right, bottom-left, bottom-right)
    decoded from the matching 8x8 quadrant of the 16x16 map by one shared decoder. All four quadrants are
    decoded every call (FastGAN decodes one random crop), so D stays deterministic given its inputs.
    """
    widths = _check_widths(widths, 5, "the FastGAN discriminator (64, 32, 16, 8 maps, then the 4x4 head)")
    _check_classes(num_classes)
    image = keras.Input(IMAGE_SHAPE, name="image")  # [N, 128, 128, 1]
    x = keras.layers.Conv2D(widths[0], 4, strides=2, padding="same", name="down0_conv")(image)  # [N, 64, 64, w0]
    feat64 = x = _leaky(x, "down0_act")
    x = _d_down_block(x, widths[1], "down1")  # [N, 32, 32, w1]
    feat16 = x = _d_down_block(x, widths[2], "down2")  # [N, 16, 16, w2]
    x = _d_down_block(x, widths[3], "down3")  # [N, 8, 8, w3]
    feat8 = _sle(feat64, x, "sle_d")  # [N, 8, 8, w3], gated by the 64x64 map
    pooled = _d_head(feat8, widths[4])  # [N, w4]
    inputs, logit = image, keras.layers.Dense(1, dtype="float32", name="logit")(pooled)  # [N, 1]
    if num_classes:
        label = _label_input()
        inputs, logit = [image, label], _projection_logit(pooled, label, num_classes)  # [N, 1]
    rec_whole = _decoder(feat8, "dec_whole")  # [N, 64, 64, 1]
    rec_quadrants = _decode_quadrants(feat16)  # [N, 4, 64, 64, 1]
    return keras.Model(inputs, [logit, rec_whole, rec_quadrants], name=name)


def _d_down_block(x, width, name):
    """FastGAN's residual down block: (strided conv path + avg-pool 1x1 conv path) / 2."""
    a = keras.layers.Conv2D(width, 4, strides=2, padding="same", use_bias=False, name=f"{name}_conv")(x)  # [N, H/2, W/2, width]
    a = _leaky(keras.layers.BatchNormalization(name=f"{name}_bn")(a), f"{name}_act")
    b = keras.layers.AveragePooling2D(2, name=f"{name}_skip_pool")(x)  # [N, H/2, W/2, C]
    b = keras.layers.Conv2D(width, 1, use_bias=False, name=f"{name}_skip_conv")(b)  # [N, H/2, W/2, width]
    b = _leaky(keras.layers.BatchNormalization(name=f"{name}_skip_bn")(b), f"{name}_skip_act")
    return keras.layers.Average(name=f"{name}_out")([a, b])  # [N, H/2, W/2, width]


def _d_head(x, width):
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="head_conv")(x)  # [N, 4, 4, width]
    x = _leaky(keras.layers.BatchNormalization(name="head_bn")(x), "head_act")
    return keras.layers.GlobalAveragePooling2D(name="head_pool")(x)  # [N, width]


def _projection_logit(pooled, label, num_classes):
    """Projection discriminator: linear(h) + <embed(label), h>."""
    e = keras.layers.Embedding(num_classes, pooled.shape[-1], name="label_embed")(label)  # [N, 1, width]
    e = keras.layers.Flatten(name="label_flat")(e)  # [N, width]
    proj = keras.layers.Dot(axes=1, dtype="float32", name="projection")([e, pooled])  # [N, 1]
    linear = keras.layers.Dense(1, dtype="float32", name="logit_linear")(pooled)  # [N, 1]
    return keras.layers.Add(dtype="float32", name="logit")([linear, proj])  # [N, 1]


def _decoder(x, name):
    """Small decoder [M, 8, 8, C] -> [M, 64, 64, 1]: (nearest upsample, 3x3 conv, leaky) x2, upsample, tanh conv."""
    for i, width in enumerate(DECODER_WIDTHS):
        x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up{i}_resize")(x)  # [M, 2H, 2W, C]
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"{name}_up{i}_conv")(x)  # [M, 2H, 2W, width]
        x = _leaky(x, f"{name}_up{i}_act")
    x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_out_resize")(x)  # [M, 64, 64, width]
    return keras.layers.Conv2D(1, 3, padding="same", activation="tanh", dtype="float32", name=f"{name}_out")(x)  # [M, 64, 64, 1]


def _decode_quadrants(feat16):
    """The four 8x8 quadrants of feat16 [N, 16, 16, C] through one shared decoder -> [N, 4, 64, 64, 1]."""
    q = QuadrantsToBatch(name="quadrants_to_batch")(feat16)  # [4N, 8, 8, C]
    q = _decoder(q, "dec_part")  # [4N, 64, 64, 1]
    return BatchToQuadrants(dtype="float32", name="rec_quadrants")(q)  # [N, 4, 64, 64, 1]


# --- reconstruction loss -----------------------------------------------------------------------------


def reconstruction_targets(images):
    """Images [N, 128, 128, 1] -> (whole [N, 64, 64, 1] 2x2-average pooled, quadrants [N, 4, 64, 64, 1]).

    Quadrant order: top-left, top-right, bottom-left, bottom-right (full resolution).
    """
    images = ops.convert_to_tensor(images, dtype="float32")  # [N, 128, 128, 1]
    whole = ops.average_pool(images, 2, strides=2, padding="valid")  # [N, 64, 64, 1]
    return whole, _quadrants(images)  # [N, 64, 64, 1], [N, 4, 64, 64, 1]


def reconstruction_loss(images, rec_whole, rec_quadrants):
    """Scalar L1: mean |rec_whole - whole| + mean |rec_quadrants - quadrants| (float32).

    FastGAN uses a perceptual (LPIPS) loss plus MSE; LPIPS weights are not available offline, so this is
    plain mean absolute error. Add it to the discriminator's loss on real images only.
    """
    whole, quadrants = reconstruction_targets(images)
    rec_whole = ops.cast(rec_whole, "float32")  # [N, 64, 64, 1]
    rec_quadrants = ops.cast(rec_quadrants, "float32")  # [N, 4, 64, 64, 1]
    return ops.mean(ops.abs(rec_whole - whole)) + ops.mean(ops.abs(rec_quadrants - quadrants))
