"""A small StyleGAN2 generator and residual discriminator for 128x128 one-channel slices (Keras 3, keras.ops).

Kept from StyleGAN2 (Karras et al. 2020) and StyleGAN2-ADA: the mapping network (z normalised to unit
second moment, lr multiplier 0.01, equalised learning rate; a normalised class embedding concatenated
for conditional models), the learned 4x4 constant, modulated/demodulated 3x3 convolutions with per-pixel
noise (constant noise maps at inference), the skip generator (a modulated 1x1 toRGB per resolution,
upsampled and summed, linear output), one w per modulated layer (W+), the truncation trick, and the
residual discriminator with minibatch standard deviation (plus a projection term when conditional).

Simplified: nearest (features) and bilinear (the toRGB sum) resizing and 2x2 average pooling stand in
for StyleGAN2's FIR up/down filters; the mapping network does not track w_avg during training
(`w_average` computes it on demand); no style mixing regularisation, path length regulariser, lazy
regularisation or conv clamping here (the training loop owns losses and penalties); the toRGB layers
take their own w instead of sharing the next block's; the discriminator uses ordinary He-initialised
Keras Conv2D/Dense layers with leaky ReLU 0.2 by default (He initialisation keeps the activations' scale
as StyleGAN's sqrt(2) gain does; `equalized=True`, the `style-ada` recipe, uses StyleGAN2's equalised
learning rate instead, which its lr 0.0025 assumes), and its second 3x3 convolution runs after the
downsampling (as StyleGAN2's blur + stride-2 convolution).

Conventions: the generator maps z [N, latent_dim] (and `label` int32 [N, 1] when conditional) to an
image [N, 128, 128, 1] float32, linear, roughly in [-1, 1] once trained (untrained: std about 1 with
peaks of a few units; callers clip); the synthesis network takes ws [N, num_ws, w_dim] with
num_ws = 3 * 6 - 1 = 17 (11 convolutions + 6 toRGBs, in network order).
"""
import keras
import numpy as np
from keras import ops

from covgan_utils.nets.layers import (
    ConstantInput,
    EqualizedConv2D,
    EqualizedDense,
    MinibatchStdDev,
    ModulatedConv2D,
    NoiseInjection,
    Normalize2ndMoment,
    ScaledLeakyReLU,
)

IMAGE_SHAPE = (128, 128, 1)
RESOLUTIONS = (4, 8, 16, 32, 64, 128)
G_WIDTHS = (128, 128, 64, 32, 16, 8)  # synthesis channels at 4, 8, ..., 128
D_WIDTHS = (16, 32, 64, 128, 256, 256)  # discriminator channels at 128 (fromRGB), 64, ..., 4


def _check_widths(widths, what):
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(RESOLUTIONS) or any(w < 1 for w in widths):
        raise ValueError(f"{what} needs {len(RESOLUTIONS)} positive widths (one per resolution {RESOLUTIONS}), got {widths}")
    return widths


def num_ws(generator_or_widths=G_WIDTHS):
    """Number of ws the synthesis network takes (of a generator, its synthesis model, or synthesis widths).

    Index order: the modulated layers in network order, b4_conv0, b4_torgb, b8_conv0, b8_conv1, b8_torgb, ...
    """
    if isinstance(generator_or_widths, keras.Model):
        model = generator_or_widths
        if model.name != "synthesis" and any(layer.name == "synthesis" for layer in model.layers):
            model = model.get_layer("synthesis")
        return int(model.inputs[0].shape[1])
    return 3 * len(_check_widths(generator_or_widths, "the synthesis network")) - 1


def _check_positive(**values):
    bad = {k: v for k, v in values.items() if int(v) < (0 if k == "num_classes" else 1)}
    if bad:
        raise ValueError(f"expected positive sizes (num_classes >= 0), got {bad}")


def build_mapping(latent_dim=100, w_dim=128, mapping_layers=4, num_classes=0, name="mapping"):
    """z [N, latent_dim] (and label int32 [N, 1] when num_classes > 0) -> w [N, w_dim]."""
    _check_positive(latent_dim=latent_dim, w_dim=w_dim, mapping_layers=mapping_layers, num_classes=num_classes)
    z = keras.Input((latent_dim,), name="z")  # [N, latent]
    inputs = [z]
    x = Normalize2ndMoment(name="normalize_z")(z)  # [N, latent]
    if num_classes:
        label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
        inputs.append(label)
        e = keras.layers.Embedding(num_classes, w_dim, name="embed")(label)  # [N, 1, w_dim]
        e = keras.layers.Reshape((w_dim,), name="embed_flat")(e)  # [N, w_dim]
        e = Normalize2ndMoment(name="normalize_embed")(e)  # [N, w_dim]
        x = keras.layers.Concatenate(name="concat")([x, e])  # [N, latent + w_dim]
    for i in range(mapping_layers):
        x = EqualizedDense(w_dim, lr_mul=0.01, name=f"fc{i}")(x)  # [N, w_dim]
        x = ScaledLeakyReLU(name=f"fc{i}_act")(x)
    return keras.Model(inputs if num_classes else z, x, name=name)


def _styled_conv(x, ws, width, index, name):
    x = ModulatedConv2D(width, 3, w_index=index, name=f"{name}_conv")([x, ws])  # [N, R, R, width] (+ bias)
    x = NoiseInjection(seed=1000 + index, name=f"{name}_noise")(x)  # bias before noise: the sum commutes
    return ScaledLeakyReLU(name=f"{name}_act")(x)


def build_synthesis(w_dim=128, widths=G_WIDTHS, name="synthesis"):
    """ws [N, num_ws, w_dim] -> image [N, 128, 128, 1] float32 (linear; skip architecture)."""
    widths = _check_widths(widths, "the synthesis network")
    ws = keras.Input((num_ws(widths), w_dim), name="ws")  # [N, num_ws, w_dim]
    x = ConstantInput(widths[0], size=4, name="const")(ws)  # [N, 4, 4, widths[0]]
    index, image = 0, None
    for r, (res, width) in enumerate(zip(RESOLUTIONS, widths)):
        if r:
            x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"b{res}_up")(x)  # [N, res, res, C]
        for k in range(2 if r else 1):
            x = _styled_conv(x, ws, width, index, f"b{res}_conv{k}")  # [N, res, res, width]
            index += 1
        rgb = ModulatedConv2D(1, 1, demodulate=False, w_index=index, name=f"b{res}_torgb")([x, ws])  # [N, res, res, 1]
        index += 1
        if image is not None:
            image = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"b{res}_image_up")(image)  # [N, res, res, 1]
            rgb = keras.layers.Add(name=f"b{res}_skip")([image, rgb])
        image = rgb
    image = keras.layers.Activation("linear", dtype="float32", name="image")(image)  # [N, 128, 128, 1]
    return keras.Model(ws, image, name=name)


def build_style_generator(latent_dim=100, w_dim=128, mapping_layers=4, widths=G_WIDTHS, num_classes=0, name="style_generator"):
    """z [N, latent_dim] (inputs [z, label] when num_classes > 0) -> image [N, 128, 128, 1] float32.

    Sub-models: get_layer("mapping") (z -> w) and get_layer("synthesis") (ws [N, num_ws, w_dim] -> image).
    """
    mapping = build_mapping(latent_dim, w_dim, mapping_layers, num_classes)
    synthesis = build_synthesis(w_dim, widths)
    z = keras.Input((latent_dim,), name="z")  # [N, latent]
    inputs = [z, keras.Input((1,), dtype="int32", name="label")] if num_classes else z  # label [N, 1]
    w = mapping(inputs)  # [N, w_dim]
    ws = keras.layers.RepeatVector(num_ws(widths), name="broadcast_w")(w)  # [N, num_ws, w_dim]
    return keras.Model(inputs, synthesis(ws), name=name)


def _conditional(generator):
    return len(generator.get_layer("mapping").inputs) == 2


def _mapping_inputs(generator, z, labels):
    """NumPy inputs of the mapping: z, or [z, labels [N, 1] int32] for a conditional generator."""
    z = np.asarray(z, np.float32)  # [N, latent]
    if not _conditional(generator):
        if labels is not None:
            raise ValueError("labels given to an unconditional generator")
        return z
    if labels is None:
        raise ValueError("a conditional generator needs labels (one int per sample, or one int for all)")
    labels = np.broadcast_to(np.asarray(labels, np.int32).reshape(-1, 1), (len(z), 1))  # [N, 1]
    return [z, labels]


def w_average(generator, n=2048, seed=123, labels=None):
    """Mean w [w_dim] (NumPy) of the mapping over n fixed draws of z from np.random.RandomState(seed).

    Conditional generators: `labels` (one int, or n ints) picks the classes; None draws them uniformly from
    the same RandomState. Computed afresh on every call from the current weights (nothing is cached).
    """
    mapping = generator.get_layer("mapping")
    rng = np.random.RandomState(seed)
    z = rng.standard_normal((n, mapping.inputs[0].shape[1])).astype(np.float32)  # [n, latent]
    if _conditional(generator) and labels is None:
        labels = rng.randint(0, generator.get_layer("mapping").get_layer("embed").input_dim, size=n)  # [n]
    inputs = _mapping_inputs(generator, z, labels)
    total = 0.0
    for start in range(0, n, 512):
        chunk = [a[start:start + 512] for a in inputs] if isinstance(inputs, list) else inputs[start:start + 512]
        total = total + ops.convert_to_numpy(ops.sum(mapping(chunk, training=False), axis=0)).astype(np.float64)  # [w_dim]
    return (total / n).astype(np.float32)


def truncated_images(generator, z, psi, labels=None, batch_size=64, w_avg=None):
    """Images [N, 128, 128, 1] float32 (NumPy) from w = w_avg + psi * (w - w_avg) (the truncation trick).

    psi=1 gives the plain generator's images. `w_avg` defaults to `w_average(generator)` (recomputed per
    call; pass one in to reuse it while the weights stay the same).
    """
    mapping, synthesis = generator.get_layer("mapping"), generator.get_layer("synthesis")
    w_avg = w_average(generator) if w_avg is None else np.asarray(w_avg, np.float32)  # [w_dim]
    inputs = _mapping_inputs(generator, z, labels)
    n, out = len(np.asarray(z)), []
    for start in range(0, n, batch_size):
        chunk = [a[start:start + batch_size] for a in inputs] if isinstance(inputs, list) else inputs[start:start + batch_size]
        w = ops.convert_to_numpy(mapping(chunk, training=False))  # [B, w_dim]
        w = w_avg + np.float32(psi) * (w - w_avg)  # [B, w_dim]
        ws = np.repeat(w[:, None], num_ws(synthesis), axis=1)  # [B, num_ws, w_dim]
        out.append(ops.convert_to_numpy(synthesis(ws, training=False)).astype(np.float32))  # [B, 128, 128, 1]
    return np.concatenate(out) if out else np.zeros((0,) + IMAGE_SHAPE, np.float32)


def _conv(width, kernel, equalized, name, gain=2.0**0.5, use_bias=True, init="he_normal"):
    """A stride-1 "same" convolution: equalised learning rate (gain sqrt(2) before leaky ReLU) or a Keras Conv2D."""
    if equalized:
        return EqualizedConv2D(width, kernel, gain=gain, use_bias=use_bias, name=name)
    return keras.layers.Conv2D(width, kernel, padding="same", use_bias=use_bias, kernel_initializer=init, name=name)


def _dense(units, equalized, name, gain=1.0, init="glorot_uniform", dtype=None):
    """A dense layer: equalised learning rate or a Keras Dense."""
    if equalized:
        return EqualizedDense(units, gain=gain, name=name, dtype=dtype)
    return keras.layers.Dense(units, kernel_initializer=init, name=name, dtype=dtype)


def _conv_act(x, width, kernel, name, equalized=False):
    x = _conv(width, kernel, equalized, f"{name}_conv")(x)
    return keras.layers.LeakyReLU(0.2, name=f"{name}_act")(x)


def _residual_block(x, width_in, width_out, name, equalized=False):
    """[N, R, R, width_in] -> [N, R/2, R/2, width_out]: (conv3x3, pool, conv3x3) + (pool, conv1x1), / sqrt(2)."""
    skip = keras.layers.AveragePooling2D(2, name=f"{name}_skip_pool")(x)  # [N, R/2, R/2, width_in]
    skip = _conv(width_out, 1, equalized, f"{name}_skip", gain=1.0, use_bias=False, init="glorot_uniform")(skip)  # [N, R/2, R/2, width_out]
    y = _conv_act(x, width_in, 3, f"{name}_conv0", equalized)  # [N, R, R, width_in]
    y = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(y)  # [N, R/2, R/2, width_in]
    y = _conv_act(y, width_out, 3, f"{name}_conv1", equalized)  # [N, R/2, R/2, width_out]
    y = keras.layers.Add(name=f"{name}_sum")([y, skip])
    return keras.layers.Rescaling(0.5**0.5, name=f"{name}_out")(y)  # [N, R/2, R/2, width_out]


def build_residual_discriminator(widths=D_WIDTHS, mbstd_group=4, num_classes=0, equalized=False, name="residual_discriminator"):
    """Image [N, 128, 128, 1] (inputs [image, label int32 [N, 1]] when num_classes > 0) -> logit [N, 1] float32.

    widths: channels of fromRGB at 128x128, then after each residual block at 64, 32, 16, 8, 4. equalized: every
    convolution and dense layer with StyleGAN2's equalised learning rate (its lr 0.0025 needs it), else He-initialised.
    """
    widths = _check_widths(widths, "the residual discriminator")
    _check_positive(mbstd_group=mbstd_group, num_classes=num_classes)
    image = keras.Input(IMAGE_SHAPE, name="image")  # [N, 128, 128, 1]
    x = _conv_act(image, widths[0], 1, "from_rgb", equalized)  # [N, 128, 128, widths[0]]
    for i in range(len(widths) - 1):
        x = _residual_block(x, widths[i], widths[i + 1], f"b{RESOLUTIONS[-1 - i]}", equalized)  # [N, 64 / 2**i, 64 / 2**i, widths[i + 1]]
    x = MinibatchStdDev(mbstd_group, name="mbstd")(x)  # [N, 4, 4, widths[5] + 1]
    x = _conv_act(x, widths[-1], 3, "b4", equalized)  # [N, 4, 4, widths[5]]
    x = keras.layers.Flatten(name="flatten")(x)  # [N, 16 * widths[5]]
    x = _dense(widths[-1], equalized, "b4_fc", gain=2.0**0.5, init="he_normal")(x)
    x = keras.layers.LeakyReLU(0.2, name="b4_fc_act")(x)  # [N, widths[5]] penultimate features
    logit = _dense(1, equalized, "logit", dtype="float32")(x)  # [N, 1]
    if not num_classes:
        return keras.Model(image, logit, name=name)
    label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
    e = keras.layers.Embedding(num_classes, widths[-1], name="embed")(label)  # [N, 1, widths[5]]
    e = keras.layers.Reshape((widths[-1],), name="embed_flat")(e)  # [N, widths[5]]
    projection = keras.layers.Dot(axes=1, name="projection")([e, x])  # [N, 1]
    logit = keras.layers.Add(dtype="float32", name="logit_projected")([logit, projection])  # [N, 1]
    return keras.Model([image, label], logit, name=name)
