"""DCGAN generators and discriminators (Keras 3 functional API).

`paper`: the paper's public DCGAN (generator ends in a Flatten -> Dense(16384) "fully dense" layer,
~287.6M parameters). `lean`: the same doubling/halving design with a per-pixel 1x1 output layer and
configurable widths, small enough to train on a CPU; optional per-pixel noise inputs.
"""
import keras

from covgan_utils.nets.layers import NoiseInjection

IMAGE_SHAPE = (128, 128, 1)


PAPER_G_WIDTHS = (512, 256, 128, 64, 1)  # Conv2DTranspose filters, 4 -> 128


PAPER_D_WIDTHS = (64, 128, 256, 512, 1024)  # Conv2D filters, 128 -> 4


def _leaky(x, slope, name):
    return keras.layers.LeakyReLU(negative_slope=slope, name=name)(x)


def build_generator(arch="lean", latent_dim=100, widths=None, base_width=1024, upsample="transpose", slope=0.2, name=None, block_convs=1, out_kernel=1,
                    noise_inputs=False, num_classes=0):
    """Noise [N, latent_dim] (and a class label [N, 1] when `num_classes`) -> image [N, 128, 128, 1] in [-1, 1].

    lean only: `block_convs` 3x3 convolutions per doubling (the first one does the upsampling),
    `out_kernel` the size of the tanh output convolution, `noise_inputs` per-pixel noise after every
    convolution (`layers.NoiseInjection`: zero-initialised strength, constant maps at inference), and
    `num_classes` a class embedding concatenated to z.
    """
    if arch == "paper":
        if noise_inputs or num_classes:
            raise ValueError("the paper generator is kept as published: no noise inputs or class conditioning (use arch 'lean')")
        return _paper_generator(latent_dim, slope, name or "paper_generator")
    if arch != "lean":
        raise ValueError(f"unknown generator arch {arch!r}; choose 'paper' or 'lean' (style and fastgan: covgan_utils.nets.families.generator_for)")
    widths = tuple(widths or (256, 128, 64, 32, 16))
    if block_convs < 1 or out_kernel not in (1, 3):
        raise ValueError(f"block_convs must be >= 1 and out_kernel 1 or 3, got {block_convs} and {out_kernel}")
    if len(widths) != 5:
        raise ValueError(f"lean generator needs 5 widths (4 -> 128 in five doublings), got {widths}")
    z = keras.Input((latent_dim,), name="z")  # [N, latent]
    inputs, h = _with_class_embedding(z, num_classes, latent_dim)  # h: [N, latent (+ latent)]
    x = keras.layers.Dense(4 * 4 * base_width, use_bias=False, name="project")(h)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = _leaky(x, slope, "project_act")
    x = keras.layers.Reshape((4, 4, base_width), name="to_map")(x)  # [N, 4, 4, base]
    for i, width in enumerate(widths):
        x = _up_block(x, width, upsample, slope, f"up{i}", noise_inputs)  # [N, 8 * 2**i, 8 * 2**i, width]
        for k in range(1, block_convs):
            x = _conv_bn_act(x, width, slope, f"up{i}_extra{k}", noise_inputs)  # [N, 8 * 2**i, 8 * 2**i, width]
    x = keras.layers.Conv2D(1, out_kernel, padding="same", activation="tanh", dtype="float32", name="to_image")(x)  # [N, 128, 128, 1]
    return keras.Model(inputs, x, name=name or "lean_generator")


def _with_class_embedding(z, num_classes, width):
    """(model inputs, z with a class embedding [N, width] concatenated when conditional)."""
    if not num_classes:
        return z, z
    label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
    e = keras.layers.Embedding(num_classes, width, name="class_embed")(label)  # [N, 1, width]
    e = keras.layers.Flatten(name="class_flat")(e)  # [N, width]
    return [z, label], keras.layers.Concatenate(name="z_and_class")([z, e])


def _noise(x, enabled, name, seed):
    return NoiseInjection(seed=seed, name=f"{name}_noise")(x) if enabled else x


def _up_block(x, width, upsample, slope, name, noise_inputs=False):
    if upsample == "transpose":
        x = keras.layers.Conv2DTranspose(width, 5, strides=2, padding="same", use_bias=False, name=f"{name}_deconv")(x)
    elif upsample in ("resize", "bilinear"):  # resize + conv: no checkerboard pattern
        mode = "nearest" if upsample == "resize" else "bilinear"
        x = keras.layers.UpSampling2D(2, interpolation=mode, name=f"{name}_resize")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        raise ValueError(f"unknown upsample {upsample!r}; choose 'transpose', 'resize' or 'bilinear'")
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = _noise(x, noise_inputs, name, seed=_seed_of(name))  # after the normalisation, which would remove it
    return _leaky(x, slope, f"{name}_act")


def _conv_bn_act(x, width, slope, name, noise_inputs=False):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = _noise(x, noise_inputs, name, seed=_seed_of(name))
    return _leaky(x, slope, f"{name}_act")


def _seed_of(name):
    """A fixed seed per layer name, so every layer's constant noise map differs and is reproducible."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name))


def _paper_generator(latent_dim, slope, name):
    z = keras.Input((latent_dim,), name="z")  # [N, 100]
    x = keras.layers.Dense(4 * 4 * 1024, name="project")(z)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = _leaky(x, slope, "project_act")
    x = keras.layers.Reshape((4, 4, 1024), name="to_map")(x)  # [N, 4, 4, 1024]
    for i, width in enumerate(PAPER_G_WIDTHS):
        x = keras.layers.Conv2DTranspose(width, 5, strides=2, padding="same", name=f"up{i}_deconv")(x)
        if i < len(PAPER_G_WIDTHS) - 1:
            x = keras.layers.BatchNormalization(name=f"up{i}_bn")(x)
            x = _leaky(x, slope, f"up{i}_act")
    x = keras.layers.Flatten(name="flatten")(x)  # [N, 16384]
    x = keras.layers.Dense(128 * 128, activation="tanh", dtype="float32", name="dense_out")(x)  # [N, 16384]
    x = keras.layers.Reshape(IMAGE_SHAPE, name="to_image")(x)  # [N, 128, 128, 1]
    return keras.Model(z, x, name=name)


def build_discriminator(arch="lean", widths=None, dropout=0.3, slope=0.2, spectral_norm=False, name=None, num_classes=0):
    """Image [N, 128, 128, 1] (and a class label [N, 1] when `num_classes`) -> real/fake logit [N, 1].

    Conditional: a projection discriminator (Miyato & Koyama 2018), logit + <class embedding, features>."""
    if arch not in ("paper", "lean"):
        raise ValueError(f"unknown discriminator arch {arch!r}; choose 'paper' or 'lean' (or use discriminator_for(config))")
    if arch == "paper" and num_classes:
        raise ValueError("the paper discriminator is kept as published: no class conditioning (use arch 'lean')")
    widths = tuple(PAPER_D_WIDTHS if arch == "paper" else (widths or (16, 32, 64, 128, 256)))
    if len(widths) != 5:
        raise ValueError(f"discriminator needs 5 widths (128 -> 4 in five halvings), got {widths}")
    wrap = keras.layers.SpectralNormalization if spectral_norm else (lambda layer, **kw: layer)
    image = keras.Input(IMAGE_SHAPE, name="image")  # [N, 128, 128, 1]
    x = image
    for i, width in enumerate(widths):
        x = wrap(keras.layers.Conv2D(width, 5, strides=2, padding="same", name=f"down{i}_conv"), name=f"down{i}_sn")(x)
        x = _leaky(x, slope, f"down{i}_act")  # [N, 64 / 2**i, 64 / 2**i, width]
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"down{i}_drop")(x)
    features = keras.layers.Flatten(name="flatten")(x)  # [N, 4 * 4 * widths[-1]]
    x = wrap(keras.layers.Dense(1, dtype="float32", name="logit"), name="logit_sn")(features)  # [N, 1]
    if not num_classes:
        return keras.Model(image, x, name=name or f"{arch}_discriminator")
    label = keras.Input((1,), dtype="int32", name="label")  # [N, 1]
    x = projection(x, features, label, num_classes)  # [N, 1]
    return keras.Model([image, label], x, name=name or f"{arch}_discriminator")


def projection(logit, features, label, num_classes):
    """Projection discriminator: logit [N, 1] + sum(Embedding(label) * features) -> [N, 1]."""
    e = keras.layers.Embedding(num_classes, features.shape[-1], name="class_project")(label)  # [N, 1, F]
    e = keras.layers.Flatten(name="class_project_flat")(e)  # [N, F]
    dot = keras.layers.Dot(axes=1, name="class_dot")([e, features])  # [N, 1]
    return keras.layers.Add(dtype="float32", name="logit_with_class")([logit, dot])
