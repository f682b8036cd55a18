"""A residual generator and discriminator for 128x128 one-channel slices in the spirit of R3GAN (Huang et al.
2024, "The GAN is dead; long live the GAN! A modern baseline GAN"), in Keras 3 and keras.ops.

Kept from R3GAN: no normalisation layers; stages of inverted-bottleneck residual blocks (1x1 expansion, grouped
3x3 convolution, 1x1 projection, a bias and leaky ReLU 0.2 after the first two); fix-up initialisation (the
first two layers of a branch He-normal scaled by L^(-1/4), L the residual blocks of the network, i.e.
L^(-1/(2m - 2)) for m = 3 layers; the projection zero-initialised, so every block starts as the identity);
bilinear resampling (2x bilinear upsampling in G, its adjoint [1, 3, 3, 1] filter in D,
`layers.Downsample2x`) with a 1x1 convolution where the width changes (before upsampling in G, after
downsampling in D); G starts from a learned 4x4 basis scaled per channel by a linear map of z
(`layers.GenerativeBasis`) and ends in a linear 1x1 convolution; D starts with a 1x1 convolution of the
image and ends with a per-channel 4x4 convolution (its basis) and a linear map to the logit. Class
conditioning as R3GAN: G concatenates a class embedding to z, D's last linear map gives a vector whose dot
product with a class embedding is the logit.

Simplified: one block count, expansion and group width (channels per group) for every stage (R3GAN sets
the cardinality per stage, at a constant group width in its presets); plain Keras layers (no fused
bias-activation kernels or per-stage float16: the training precision policy decides); the image
convolution has a bias; on a CPU the grouped convolutions run as block-diagonal plain ones
(`layers.GroupedConv2D`).

Conventions as the other families: the generator maps z [N, latent_dim] (and `label` int32 [N, 1] when
conditional) to an image [N, 128, 128, 1] float32, linear (callers clip); the discriminator maps an image
(and label) to a float32 logit [N, 1].
"""
import keras

from covgan_utils.nets.layers import Downsample2x, GenerativeBasis, GroupedConv2D

IMAGE_SHAPE = (128, 128, 1)
RESOLUTIONS = (4, 8, 16, 32, 64, 128)
LEAKY_GAIN = (2.0 / (1.0 + 0.2**2)) ** 0.5  # keeps the second moment through leaky ReLU 0.2


def _check(widths, blocks, expansion, group_width, num_classes, what):
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(RESOLUTIONS) or any(w < 1 for w in widths):
        raise ValueError(f"{what} needs {len(RESOLUTIONS)} positive widths (one per resolution {RESOLUTIONS}), got {widths}")
    if min(blocks, expansion, group_width) < 1 or num_classes < 0:
        raise ValueError(f"{what}: blocks, expansion and group_width must be >= 1 and num_classes >= 0, got "
                         f"{blocks}, {expansion}, {group_width}, {num_classes}")
    odd = [w for w in widths if (w * expansion) % group_width]
    if odd:
        raise ValueError(f"{what}: widths {odd} times expansion {expansion} are not multiples of group_width {group_width}; "
                         f"choose a group_width that divides them")
    return widths


def _he(gain=1.0):
    """Normal(0, gain / sqrt(fan_in)) (R3GAN's MSR initialisation)."""
    return keras.initializers.VarianceScaling(gain**2, mode="fan_in", distribution="untruncated_normal")


def residual_block(x, expansion, group_width, total_blocks, name):
    """x + branch(x), [N, R, R, C] -> [N, R, R, C]; the branch: 1x1 to C * expansion, grouped 3x3 (groups of
    `group_width` channels), 1x1 back to C, leaky ReLU after the first two; it starts at zero."""
    width = x.shape[-1]
    expanded, gain = width * expansion, LEAKY_GAIN * total_blocks**-0.25
    y = keras.layers.Conv2D(expanded, 1, kernel_initializer=_he(gain), name=f"{name}_expand")(x)  # [N, R, R, C * e]
    y = keras.layers.LeakyReLU(0.2, name=f"{name}_act0")(y)
    y = GroupedConv2D(expanded, 3, groups=expanded // group_width, kernel_initializer=_he(gain), name=f"{name}_grouped")(y)
    y = keras.layers.LeakyReLU(0.2, name=f"{name}_act1")(y)  # [N, R, R, C * e]
    y = keras.layers.Conv2D(width, 1, use_bias=False, kernel_initializer="zeros", name=f"{name}_project")(y)  # [N, R, R, C]
    return keras.layers.Add(name=f"{name}_sum")([x, y])


def _stage(x, blocks, expansion, group_width, total_blocks, name):
    for b in range(blocks):
        x = residual_block(x, expansion, group_width, total_blocks, f"{name}_block{b}")
    return x


def _linear(x, width, name):
    """1x1 convolution to `width` channels (no bias) where the width changes, else x."""
    return x if x.shape[-1] == width else keras.layers.Conv2D(width, 1, use_bias=False, kernel_initializer=_he(), name=name)(x)


def build_r3gan_generator(latent_dim=100, widths=(256, 256, 128, 64, 32, 16), blocks=2, expansion=2, group_width=16,
                          num_classes=0, name="r3gan_generator"):
    """z [N, latent_dim] (inputs [z, label int32 [N, 1]] when num_classes > 0) -> image [N, 128, 128, 1] float32.

    widths: channels at 4, 8, ..., 128; blocks residual blocks per resolution."""
    widths = _check(widths, blocks, expansion, group_width, num_classes, "the r3gan generator")
    z = keras.Input((latent_dim,), name="z")  # [N, latent]
    x, inputs = z, z
    if num_classes:
        label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
        inputs = [z, label]
        e = keras.layers.Embedding(num_classes, latent_dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=1.0), name="embed")(label)
        e = keras.layers.Reshape((latent_dim,), name="embed_flat")(e)  # [N, latent]
        x = keras.layers.Concatenate(name="concat")([z, e])  # [N, 2 * latent]
    x = keras.layers.Dense(widths[0], use_bias=False, kernel_initializer=_he(), name="basis_weights")(x)  # [N, widths[0]]
    x = GenerativeBasis(4, name="basis")(x)  # [N, 4, 4, widths[0]]
    total = blocks * len(RESOLUTIONS)
    for r, (res, width) in enumerate(zip(RESOLUTIONS, widths)):
        if r:
            x = _linear(x, width, f"g{res}_transition")  # [N, res / 2, res / 2, width]
            x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"g{res}_up")(x)  # [N, res, res, width]
        x = _stage(x, blocks, expansion, group_width, total, f"g{res}")  # [N, res, res, width]
    x = keras.layers.Conv2D(1, 1, kernel_initializer=_he(), name="to_image")(x)  # [N, 128, 128, 1]
    image = keras.layers.Activation("linear", dtype="float32", name="image")(x)
    return keras.Model(inputs, image, name=name)


def build_r3gan_discriminator(widths=(16, 32, 64, 128, 256, 256), blocks=2, expansion=2, group_width=16, num_classes=0,
                              name="r3gan_discriminator"):
    """Image [N, 128, 128, 1] (inputs [image, label int32 [N, 1]] when num_classes > 0) -> logit [N, 1] float32.

    widths: channels at 128, 64, ..., 4; blocks residual blocks per resolution."""
    widths = _check(widths, blocks, expansion, group_width, num_classes, "the r3gan discriminator")
    image = keras.Input(IMAGE_SHAPE, name="image")  # [N, 128, 128, 1]
    x = keras.layers.Conv2D(widths[0], 1, use_bias=False, kernel_initializer=_he(), name="from_image")(image)  # [N, 128, 128, widths[0]]
    total = blocks * len(RESOLUTIONS)
    for i, (res, width) in enumerate(zip(reversed(RESOLUTIONS), widths)):
        x = _stage(x, blocks, expansion, group_width, total, f"d{res}")  # [N, res, res, width]
        if res > RESOLUTIONS[0]:
            x = Downsample2x(name=f"d{res}_down")(x)  # [N, res / 2, res / 2, width]
            x = _linear(x, widths[i + 1], f"d{res}_transition")  # [N, res / 2, res / 2, widths[i + 1]]
    basis_init = keras.initializers.RandomNormal(stddev=0.25)  # gain 1 over a fan-in of 16
    x = keras.layers.DepthwiseConv2D(4, use_bias=False, depthwise_initializer=basis_init, name="d_basis")(x)  # [N, 1, 1, widths[5]]
    x = keras.layers.Flatten(name="flatten")(x)  # [N, widths[5]]
    if not num_classes:
        logit = keras.layers.Dense(1, use_bias=False, kernel_initializer=_he(), dtype="float32", name="logit")(x)  # [N, 1]
        return keras.Model(image, logit, name=name)
    dim = widths[-1]
    x = keras.layers.Dense(dim, use_bias=False, kernel_initializer=_he(), name="to_embedding")(x)  # [N, dim]
    label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
    e = keras.layers.Embedding(num_classes, dim, embeddings_initializer=keras.initializers.RandomNormal(stddev=dim**-0.5), name="embed")(label)
    e = keras.layers.Reshape((dim,), name="embed_flat")(e)  # [N, dim]
    logit = keras.layers.Dot(axes=1, dtype="float32", name="logit")([x, e])  # [N, 1]
    return keras.Model([image, label], logit, name=name)
