"""Custom Keras layers shared by the model families, in `keras.ops` (TensorFlow and JAX).

Every layer here is registered for Keras serialisation (package "covgan") and is deterministic at
inference, so a generated image stays a function of its seed.
"""
import keras
from keras import ops

from covgan_utils.util import hardware


@keras.saving.register_keras_serializable(package="covgan")
class NoiseInjection(keras.layers.Layer):
    """Per-pixel noise inputs (StyleGAN): x + strength[c] * noise[N, H, W, 1].

    Training draws fresh Gaussian noise from the layer's own seed generator (its state is a variable,
    checkpointed with the model). Inference uses one constant noise map drawn once from `seed` at build
    time (StyleGAN2's noise_mode="const"), so the image of seed s is the same on every call. The
    per-channel strength starts at zero: the layer begins as the identity and learns how much grain to add.
    """

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed + 1, name=f"{self.name}_seed")

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        self.strength = self.add_weight(shape=(channels,), initializer="zeros", name="strength")  # [C]
        self.const_noise = self.add_weight(
            shape=(height, width, 1), initializer=keras.initializers.RandomNormal(seed=self.seed), trainable=False, name="const_noise",
        )  # [H, W, 1]

    def call(self, x, training=False):
        if training:
            shape = (ops.shape(x)[0],) + tuple(self.const_noise.shape)
            noise = keras.random.normal(shape, seed=self.seed_generator, dtype=x.dtype)  # [N, H, W, 1]
        else:
            noise = ops.cast(self.const_noise, x.dtype)[None]  # [1, H, W, 1]
        return x + noise * ops.cast(self.strength, x.dtype)  # [N, H, W, C]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="covgan")
class Normalize2ndMoment(keras.layers.Layer):
    """x * rsqrt(mean(x**2 over the last axis) + eps) (StyleGAN's normalisation of z and of label embeddings)."""

    def __init__(self, eps=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.eps = float(eps)

    def call(self, x):
        return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + self.eps)  # [..., D]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}


@keras.saving.register_keras_serializable(package="covgan")
class ScaledLeakyReLU(keras.layers.Layer):
    """leaky_relu(x, slope) * gain; StyleGAN's activation (gain sqrt(2) keeps the second moment about 1)."""

    def __init__(self, negative_slope=0.2, gain=2.0**0.5, **kwargs):
        super().__init__(**kwargs)
        self.negative_slope, self.gain = float(negative_slope), float(gain)

    def call(self, x):
        return ops.leaky_relu(x, negative_slope=self.negative_slope) * self.gain  # same shape as x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "negative_slope": self.negative_slope, "gain": self.gain}


@keras.saving.register_keras_serializable(package="covgan")
class EqualizedDense(keras.layers.Layer):
    """Dense layer with equalised learning rate and a learning-rate multiplier (StyleGAN's mapping layers).

    The stored kernel is N(0, 1 / lr_mul^2) and is scaled by gain * lr_mul / sqrt(fan_in) at run time, the bias
    by lr_mul, so an optimiser's steps on them act lr_mul times as strongly as on an ordinary layer.
    """

    def __init__(self, units, lr_mul=1.0, gain=1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.lr_mul, self.gain = int(units), float(lr_mul), float(gain)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.weight_gain = self.gain * self.lr_mul / fan_in**0.5
        init = keras.initializers.RandomNormal(stddev=1.0 / self.lr_mul)
        self.kernel = self.add_weight(shape=(fan_in, self.units), initializer=init, name="kernel")  # [in, units]
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")  # [units]

    def call(self, x):
        kernel = ops.cast(self.kernel, x.dtype) * self.weight_gain
        return ops.matmul(x, kernel) + ops.cast(self.bias, x.dtype) * self.lr_mul  # [N, units]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "lr_mul": self.lr_mul, "gain": self.gain}


@keras.saving.register_keras_serializable(package="covgan")
class EqualizedConv2D(keras.layers.Layer):
    """Conv2D (stride 1, "same") with equalised learning rate (StyleGAN2's discriminator layers).

    The stored kernel is N(0, 1) and is scaled by gain / sqrt(fan_in) at run time, so Adam's steps of size lr
    move every layer's output by the same relative amount; StyleGAN2-ADA's lr 0.0025 assumes this. gain
    sqrt(2) before a leaky ReLU matches He initialisation at the start.
    """

    def __init__(self, filters, kernel_size, gain=1.0, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.gain, self.use_bias = int(filters), int(kernel_size), float(gain), bool(use_bias)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.weight_gain = self.gain / (channels * self.kernel_size**2) ** 0.5
        normal = keras.initializers.RandomNormal(stddev=1.0)
        self.kernel = self.add_weight(shape=(self.kernel_size, self.kernel_size, channels, self.filters), initializer=normal, name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias") if self.use_bias else None  # [C_out]

    def call(self, x):
        kernel = ops.cast(self.kernel, x.dtype) * self.weight_gain  # [k, k, C_in, C_out]
        y = ops.conv(x, kernel, padding="same")  # [N, H, W, C_out]
        return y + ops.cast(self.bias, x.dtype) if self.use_bias else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "gain": self.gain, "use_bias": self.use_bias}


@keras.saving.register_keras_serializable(package="covgan")
class ConstantInput(keras.layers.Layer):
    """The learned constant [size, size, channels] that starts StyleGAN's synthesis, repeated over the batch.

    Its input (any tensor with the batch as first axis, e.g. the ws) only gives the batch size.
    """

    def __init__(self, channels, size=4, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.size = int(channels), int(size)

    def build(self, input_shape):
        shape = (self.size, self.size, self.channels)
        self.const = self.add_weight(shape=shape, initializer=keras.initializers.RandomNormal(stddev=1.0), name="const")  # [S, S, C]

    def call(self, inputs):
        n = ops.shape(inputs)[0]
        return ops.broadcast_to(ops.cast(self.const, self.compute_dtype)[None], (n, self.size, self.size, self.channels))  # [N, S, S, C]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "size": self.size}


@keras.saving.register_keras_serializable(package="covgan")
class ModulatedConv2D(keras.layers.Layer):
    """StyleGAN2's modulated (and optionally demodulated) convolution: inputs [x, w] -> [N, H, W, filters].

    A style s = affine(w) [N, C_in] (equalised Dense, bias initialised to 1) scales the shared kernel's input
    channels per sample. StyleGAN2 modulates the weights, w'[n] = w * s[n], demodulates them by
    d[n, o] = rsqrt(sum_{kh, kw, i} w'[n]^2 + eps) and runs one grouped convolution. keras.ops has no grouped
    convolution, so this layer uses the equivalent activation form (the paper's own fused_modconv=False path):
    conv(x * s, w) * d, with d = rsqrt(s^2 @ sum_{kh, kw} w^2 + eps) [N, C_out]. Convolution is linear, so the
    result equals the weight-modulated one; one batched convolution with the shared kernel serves every sample.

    `w` is either [N, w_dim] or the W+ tensor [N, num_ws, w_dim], from which the layer takes w[:, w_index].
    The kernel uses the equalised learning rate (stored N(0, 1), scaled by 1 / sqrt(fan_in) at run time).
    A bias (zeros) is added after the convolution.
    """

    def __init__(self, filters, kernel_size=3, demodulate=True, w_index=None, eps=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.demodulate = int(filters), int(kernel_size), bool(demodulate)
        self.w_index, self.eps = None if w_index is None else int(w_index), float(eps)

    def build(self, input_shape):
        x_shape, w_shape = input_shape
        if len(w_shape) == 3 and self.w_index is None:
            raise ValueError(f"{self.name}: a W+ input [N, num_ws, w_dim] needs w_index (which w this layer takes)")
        channels, w_dim, k = int(x_shape[-1]), int(w_shape[-1]), self.kernel_size
        normal = keras.initializers.RandomNormal(stddev=1.0)
        self.kernel = self.add_weight(shape=(k, k, channels, self.filters), initializer=normal, name="kernel")  # [k, k, C_in, C_out]
        self.affine_kernel = self.add_weight(shape=(w_dim, channels), initializer=normal, name="affine_kernel")  # [w_dim, C_in]
        self.affine_bias = self.add_weight(shape=(channels,), initializer="ones", name="affine_bias")  # [C_in]
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")  # [C_out]
        self.kernel_gain, self.affine_gain = (k * k * channels) ** -0.5, w_dim**-0.5

    def styles(self, w):
        """Per-sample styles [N, C_in] of w ([N, w_dim] or [N, num_ws, w_dim])."""
        if len(w.shape) == 3:
            w = w[:, self.w_index]  # [N, w_dim]
        kernel = ops.cast(self.affine_kernel, w.dtype) * self.affine_gain
        return ops.matmul(w, kernel) + ops.cast(self.affine_bias, w.dtype)  # [N, C_in]

    def call(self, inputs):
        x, w = inputs
        s = ops.cast(self.styles(w), x.dtype)  # [N, C_in]
        kernel = ops.cast(self.kernel, x.dtype) * self.kernel_gain  # [k, k, C_in, C_out]
        y = ops.conv(x * s[:, None, None, :], kernel, padding="same")  # [N, H, W, C_out]
        if self.demodulate:
            d = ops.rsqrt(ops.matmul(ops.square(s), ops.sum(ops.square(kernel), axis=(0, 1))) + self.eps)  # [N, C_out]
            y = y * d[:, None, None, :]  # [N, H, W, C_out]
        return y + ops.cast(self.bias, x.dtype)  # [N, H, W, C_out]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
            "demodulate": self.demodulate, "w_index": self.w_index, "eps": self.eps,
        }


@keras.saving.register_keras_serializable(package="covgan")
class MinibatchStdDev(keras.layers.Layer):
    """StyleGAN's minibatch standard deviation: [N, H, W, C] -> [N, H, W, C + 1].

    The batch splits into groups of G samples (sample n is in group n % (N / G), as StyleGAN2); the extra
    channel of each sample is the standard deviation over its group, averaged over features and pixels.
    G is the largest divisor of the batch size that is <= group_size: taken from the static shape where the
    batch is known (always under JAX jit, and in tf.function with a concrete batch), else computed from the
    run-time batch size (TensorFlow with an unknown batch).
    """

    def __init__(self, group_size=4, eps=1e-8, **kwargs):
        super().__init__(**kwargs)
        if int(group_size) < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size, self.eps = int(group_size), float(eps)

    def group(self, n):
        """G for batch size n: a Python int for a static n, else an integer tensor."""
        if isinstance(n, int):
            return max(g for g in range(1, min(self.group_size, n) + 1) if n % g == 0)
        g = ops.ones((), dtype="int32")
        for k in range(2, self.group_size + 1):
            g = ops.where(ops.equal(n % k, 0), k, g)
        return g

    def call(self, x):
        n = x.shape[0] if x.shape[0] is not None else ops.shape(x)[0]
        h, w, c = x.shape[1:]
        g = self.group(n)
        groups = ops.cast(ops.reshape(x, (g, -1, h, w, c)), "float32")  # [G, M, H, W, C]
        dev = groups - ops.mean(groups, axis=0, keepdims=True)  # [G, M, H, W, C]
        std = ops.sqrt(ops.mean(ops.square(dev), axis=0, keepdims=True) + self.eps)  # [1, M, H, W, C]
        stat = ops.mean(std, axis=(2, 3, 4), keepdims=True)  # [1, M, 1, 1, 1]
        y = ops.reshape(stat + ops.zeros_like(groups[..., :1]), (-1, h, w, 1))  # [N, H, W, 1]
        y = ops.cast(y, x.dtype)  # [N, H, W, 1]
        return ops.concatenate([x, y], axis=-1)  # [N, H, W, C + 1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + 1,)

    def get_config(self):
        return {**super().get_config(), "group_size": self.group_size, "eps": self.eps}


@keras.saving.register_keras_serializable(package="covgan")
class GenerativeBasis(keras.layers.Layer):
    """A learned basis [size, size, C] scaled per sample and channel by the input [N, C] (R3GAN's 4x4 start):
    [N, C] -> [N, size, size, C]. The basis starts N(0, 1)."""

    def __init__(self, size=4, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def build(self, input_shape):
        shape = (self.size, self.size, int(input_shape[-1]))
        self.basis = self.add_weight(shape=shape, initializer=keras.initializers.RandomNormal(stddev=1.0), name="basis")  # [S, S, C]

    def call(self, x):
        return ops.cast(self.basis, x.dtype)[None] * x[:, None, None, :]  # [N, S, S, C]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="covgan")
class Downsample2x(keras.layers.Layer):
    """Halves height and width with the [1, 3, 3, 1] / 8 filter along each axis: the adjoint of bilinear 2x
    upsampling (R3GAN's interpolative downsampler), edges padded by repetition so a constant stays constant.
    One stride-2 depthwise convolution (its gradients are plain convolutions on every backend; strided
    slicing's were 10x slower under TensorFlow on a CPU). Height and width must be even."""

    TAPS = (0.125, 0.375, 0.375, 0.125)

    def call(self, x):
        for axis in (1, 2):  # repeat the edge rows, then the edge columns: [N, H + 2, W + 2, C]
            first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
            x = ops.concatenate([first, x, last], axis=axis)
        taps = ops.convert_to_tensor(self.TAPS, dtype=x.dtype)  # [4]
        kernel = ops.tile((taps[:, None] * taps[None, :])[:, :, None, None], (1, 1, x.shape[-1], 1))  # [4, 4, C, 1]
        return ops.depthwise_conv(x, kernel, strides=2, padding="valid")  # [N, H/2, W/2, C]

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, h // 2, w // 2, c)


@keras.saving.register_keras_serializable(package="covgan")
class GroupedConv2D(keras.layers.Layer):
    """A grouped convolution ("same" padding, stride 1, bias): [N, H, W, C_in] -> [N, H, W, filters], the channels
    in `groups` groups, each output group seeing only its input group. Its kernel is Keras's grouped layout
    [k, k, C_in / groups, filters]. On a GPU it runs as one grouped convolution; on a CPU, where TensorFlow
    and XLA run grouped convolutions and their gradients tens of times slower than plain ones (an R1 step
    on a 32-channel 128x128 map: 11 s against 0.2 s), as one plain convolution with the block-diagonal
    kernel the grouped one stands for: the same result with `groups` times the multiplications."""

    def __init__(self, filters, kernel_size=3, groups=1, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.groups = int(filters), int(kernel_size), int(groups)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if self.filters % self.groups:
            raise ValueError(f"{self.name}: filters {self.filters} are not a multiple of groups {self.groups}")

    def build(self, input_shape):
        channels, k = int(input_shape[-1]), self.kernel_size
        if channels % self.groups:
            raise ValueError(f"{self.name}: {channels} input channels are not a multiple of groups {self.groups}")
        shape = (k, k, channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=shape, initializer=self.kernel_initializer, name="kernel")  # [k, k, C_in / G, C_out]
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")  # [C_out]

    def block_diagonal(self, kernel):
        """The plain kernel [k, k, C_in, C_out] equal to a grouped one: zero outside the groups' blocks."""
        k, per_in, g = self.kernel_size, kernel.shape[2], self.groups
        blocks = ops.reshape(kernel, (k, k, per_in, g, self.filters // g))  # [k, k, i, group, o]
        full = ops.einsum("abigo,hg->abhigo", blocks, ops.eye(g, dtype=kernel.dtype))  # [k, k, group_in, i, group_out, o]
        return ops.reshape(full, (k, k, g * per_in, self.filters))

    def call(self, x):
        kernel = ops.cast(self.kernel, x.dtype)
        if self.groups > 1 and not hardware.gpus_seen():
            kernel = self.block_diagonal(kernel)  # [k, k, C_in, C_out]
        return ops.conv(x, kernel, padding="same") + ops.cast(self.bias, x.dtype)  # [N, H, W, C_out]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size, "groups": self.groups,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
