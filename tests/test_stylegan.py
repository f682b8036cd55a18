"""StyleGAN2-style generator and residual discriminator (covgan_utils.nets.stylegan) on the running Keras backend:
shapes, determinism, noise, demodulation, W+, truncation, minibatch standard deviation and gradients."""
import keras
import numpy as np
import pytest
from keras import ops

from covgan_utils import config as config_lib
from covgan_utils.nets import families, layers, stylegan

G_WIDTHS = (8, 8, 8, 4, 4, 4)
D_WIDTHS = (4, 4, 8, 8, 8, 8)
LATENT, W_DIM, N_WS = 8, 16, 17


def build_g(num_classes=0, seed=0):
    keras.utils.set_random_seed(seed)
    return stylegan.build_style_generator(LATENT, W_DIM, 2, G_WIDTHS, num_classes)


def build_d(num_classes=0, seed=0):
    keras.utils.set_random_seed(seed)
    return stylegan.build_residual_discriminator(D_WIDTHS, mbstd_group=4, num_classes=num_classes)


def noise(n, seed=0, dim=LATENT):
    return np.random.RandomState(seed).standard_normal((n, dim)).astype(np.float32)


def labels(*values):
    return np.asarray(values, np.int32).reshape(-1, 1)  # [N, 1]


def run(model, inputs, training=False):
    return ops.convert_to_numpy(model(inputs, training=training))


@pytest.fixture(scope="module")
def g():
    return build_g()


@pytest.fixture(scope="module")
def d():
    return build_d()


def test_generator_and_its_sub_models_have_the_documented_shapes(g):
    images = run(g, noise(3))
    assert g.output_shape == (None, 128, 128, 1) and images.shape == (3, 128, 128, 1) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and images.std() > 0
    mapping, synthesis = g.get_layer("mapping"), g.get_layer("synthesis")
    assert run(mapping, noise(3)).shape == (3, W_DIM)
    assert tuple(synthesis.inputs[0].shape) == (None, N_WS, W_DIM) and synthesis.output_shape == (None, 128, 128, 1)
    assert stylegan.num_ws(g) == stylegan.num_ws(synthesis) == stylegan.num_ws(G_WIDTHS) == N_WS
    assert stylegan.num_ws() == 17  # default widths: 11 convolutions + 6 toRGBs


def test_conditional_generator_takes_z_then_label():
    gc = build_g(num_classes=3)
    assert [t.name for t in gc.inputs] == ["z", "label"] and gc.inputs[1].dtype == "int32"
    z = noise(2)
    a, b = run(gc, [z, labels(0, 0)]), run(gc, [z, labels(2, 2)])
    assert a.shape == (2, 128, 128, 1) and a.dtype == np.float32
    assert np.abs(a - b).max() > 1e-4  # the class changes the image
    assert run(gc.get_layer("mapping"), [z, labels(1, 1)]).shape == (2, W_DIM)


def test_discriminators_give_one_float32_logit_per_image(d):
    images = np.random.RandomState(1).uniform(-1, 1, (6, 128, 128, 1)).astype(np.float32)
    logits = run(d, images)
    assert d.output_shape == (None, 1) and logits.shape == (6, 1) and logits.dtype == np.float32
    assert d.get_layer("mbstd").output.shape[1:] == (4, 4, D_WIDTHS[-1] + 1)
    dc = build_d(num_classes=3)
    assert [t.name for t in dc.inputs] == ["image", "label"]
    a, b = run(dc, [images, labels(*[0] * 6)]), run(dc, [images, labels(*[2] * 6)])
    assert a.shape == (6, 1) and a.dtype == np.float32 and np.abs(a - b).max() > 0  # the projection term
    assert not any(isinstance(layer, (keras.layers.Dropout, keras.layers.BatchNormalization)) for layer in dc.layers)


def test_inference_is_deterministic_and_seeded_builds_agree(g):
    z = noise(2)
    np.testing.assert_array_equal(run(g, z), run(g, z))
    again = build_g()
    for a, b in zip(g.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(run(again, z), run(g, z))
    d1, d2 = build_d(), build_d()
    assert all(np.array_equal(a, b) for a, b in zip(d1.get_weights(), d2.get_weights()))


def test_training_adds_noise_only_once_a_strength_is_nonzero():
    gen, z = build_g(), noise(2)
    plain = run(gen, z)
    np.testing.assert_allclose(run(gen, z, training=True), plain, atol=1e-6)  # strengths start at zero
    layer = gen.get_layer("synthesis").get_layer("b64_conv1_noise")
    layer.strength.assign(np.ones(layer.strength.shape, np.float32))
    first, second = run(gen, z, training=True), run(gen, z, training=True)
    assert np.abs(first - second).max() > 1e-4  # fresh noise per call
    inference = run(gen, z)
    np.testing.assert_array_equal(inference, run(gen, z))  # constant noise map at inference
    assert np.abs(inference - plain).max() > 1e-4


def test_noise_layers_have_distinct_constant_maps(g):
    synthesis = g.get_layer("synthesis")
    maps = [ops.convert_to_numpy(layer.const_noise) for layer in synthesis.layers if isinstance(layer, layers.NoiseInjection)]
    assert len(maps) == 11
    same_size = [m for m in maps if m.shape == maps[-1].shape]
    assert len(same_size) == 2 and not np.allclose(same_size[0], same_size[1])


def _modconv(demodulate, x, w, scale=1.0, weights=None):
    layer = layers.ModulatedConv2D(6, 3, demodulate=demodulate)
    layer([x, w])  # build
    if weights is not None:
        layer.set_weights(weights)
    layer.affine_kernel.assign(layer.affine_kernel * scale)
    layer.affine_bias.assign(layer.affine_bias * scale)
    return layer, ops.convert_to_numpy(layer([x, w]))


def test_demodulation_normalises_each_output_channel_whatever_the_style_scale():
    rng = np.random.RandomState(0)
    x = rng.standard_normal((4, 32, 32, 5)).astype(np.float32)  # unit variance
    w = rng.standard_normal((4, 7)).astype(np.float32)
    keras.utils.set_random_seed(0)
    layer, y = _modconv(True, x, w)
    second_moment = (y[:, 2:-2, 2:-2] ** 2).mean(axis=(1, 2))  # [N, C_out], away from the zero padding
    np.testing.assert_allclose(second_moment, 1.0, atol=0.2)
    _, y10 = _modconv(True, x, w, scale=10.0, weights=layer.get_weights())
    np.testing.assert_allclose(y10, y, atol=1e-4)
    _, plain = _modconv(False, x, w, weights=layer.get_weights())
    _, plain10 = _modconv(False, x, w, scale=10.0, weights=layer.get_weights())
    assert np.abs(plain - y).max() > 1e-2
    np.testing.assert_allclose(plain10, 10 * plain, rtol=1e-3, atol=1e-3)  # without demodulation the style scales the output


def test_activation_form_equals_stylegan2_weight_modulation():
    rng = np.random.RandomState(1)
    x, w = rng.standard_normal((3, 8, 8, 5)).astype(np.float32), rng.standard_normal((3, 7)).astype(np.float32)
    keras.utils.set_random_seed(1)
    layer, y = _modconv(True, x, w)
    layer.bias.assign(np.full(6, 0.5, np.float32))
    y = ops.convert_to_numpy(layer([x, w]))
    s = ops.convert_to_numpy(layer.styles(w))  # [N, C_in]
    kernel = ops.convert_to_numpy(layer.kernel) * layer.kernel_gain  # [3, 3, C_in, C_out]
    for n in range(3):
        modulated = kernel * s[n][None, None, :, None]  # w'[n]
        demodulated = modulated / np.sqrt((modulated**2).sum(axis=(0, 1, 2)) + 1e-8)  # w''[n]
        expected = ops.convert_to_numpy(ops.conv(x[n:n + 1], demodulated, padding="same")) + 0.5
        np.testing.assert_allclose(y[n:n + 1], expected, atol=1e-4)


def test_w_plus_drives_each_layer_and_identical_ws_reproduce_the_generator(g):
    mapping, synthesis, z = g.get_layer("mapping"), g.get_layer("synthesis"), noise(2)
    w = run(mapping, z)  # [2, W_DIM]
    ws = np.repeat(w[:, None], N_WS, axis=1)  # [2, num_ws, W_DIM]
    np.testing.assert_allclose(run(synthesis, ws), run(g, z), atol=1e-5)
    other = run(mapping, noise(2, seed=5))
    for index in (0, 7, N_WS - 1):  # the 4x4 conv, a 32x32 conv, the last toRGB
        mixed = ws.copy()
        mixed[:, index] = other
        assert np.abs(run(synthesis, mixed) - run(g, z)).max() > 1e-5


def test_truncation_interpolates_towards_the_average_w(g):
    z = noise(3, seed=2)
    w_avg = stylegan.w_average(g, n=256)
    assert w_avg.shape == (W_DIM,) and w_avg.dtype == np.float32
    np.testing.assert_array_equal(w_avg, stylegan.w_average(g, n=256))  # fixed noise
    np.testing.assert_allclose(stylegan.truncated_images(g, z, 1.0, batch_size=2), run(g, z), atol=1e-5)
    flat = stylegan.truncated_images(g, z, 0.0, w_avg=w_avg)
    assert flat.shape == (3, 128, 128, 1) and flat.dtype == np.float32
    np.testing.assert_allclose(flat, np.broadcast_to(flat[:1], flat.shape), atol=1e-5)
    half = stylegan.truncated_images(g, z, 0.5, w_avg=w_avg)
    assert np.abs(half - flat).max() > 1e-5 and np.abs(half - run(g, z)).max() > 1e-5


def test_truncation_of_a_conditional_generator_needs_labels():
    gc = build_g(num_classes=3)
    z = noise(2)
    assert stylegan.w_average(gc, n=64).shape == (W_DIM,)
    images = stylegan.truncated_images(gc, z, 1.0, labels=[1, 2])
    np.testing.assert_allclose(images, run(gc, [z, labels(1, 2)]), atol=1e-5)
    with pytest.raises(ValueError, match="needs labels"):
        stylegan.truncated_images(gc, z, 0.7)


def _mbstd_reference(x, group):
    n, h, w, c = x.shape
    groups = x.reshape(group, n // group, h, w, c)
    stat = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # [M]
    extra = np.broadcast_to(np.tile(stat, group)[:, None, None, None], (n, h, w, 1))
    return np.concatenate([x, extra], axis=-1)


def test_minibatch_stddev_adds_one_channel_of_group_statistics():
    layer = layers.MinibatchStdDev(4)
    assert [layer.group(n) for n in (8, 6, 7, 2, 1)] == [4, 3, 1, 2, 1]
    x = np.random.RandomState(3).standard_normal((8, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), _mbstd_reference(x, 4), atol=1e-5)
    same = np.repeat(x[:1], 8, axis=0)
    out = ops.convert_to_numpy(layer(same))
    assert out.shape == (8, 4, 4, 4) and np.abs(out[..., 3]).max() < 1e-3
    six = x[:6]  # group 4 does not divide 6: G = 3
    np.testing.assert_allclose(ops.convert_to_numpy(layer(six)), _mbstd_reference(six, 3), atol=1e-5)


def test_minibatch_stddev_with_an_unknown_batch_and_compiled():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layers.MinibatchStdDev(4)(inputs))
    assert model.output_shape == (None, 4, 4, 4)
    six = np.random.RandomState(4).standard_normal((6, 4, 4, 3)).astype(np.float32)
    expected = _mbstd_reference(six, 3)
    np.testing.assert_allclose(run(model, six), expected, atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        dynamic = tf.function(lambda t: model(t), input_signature=[tf.TensorSpec((None, 4, 4, 3), tf.float32)])
        np.testing.assert_allclose(dynamic(six).numpy(), expected, atol=1e-5)  # G from the run-time batch size
    else:
        import jax

        np.testing.assert_allclose(np.asarray(jax.jit(lambda t: model(t))(six)), expected, atol=1e-5)


def _gradients(model, inputs):
    """Gradients of sum(model(inputs, training=True)) w.r.t. the trainable weights, compiled for the backend."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        @tf.function
        def grads(inputs):
            with tf.GradientTape() as tape:
                total = tf.reduce_sum(model(inputs, training=True))
            return tape.gradient(total, model.trainable_variables)

        return [tf.convert_to_tensor(g).numpy() for g in grads(inputs)]  # embeddings give IndexedSlices
    import jax

    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def total(trainable, non_trainable, inputs):
        return ops.sum(model.stateless_call(trainable, non_trainable, inputs, training=True)[0])

    return [np.asarray(g) for g in jax.jit(jax.grad(total))(trainable, non_trainable, inputs)]


@pytest.mark.parametrize("num_classes", [0, 3])
def test_gradients_are_finite_on_the_running_backend(num_classes):
    gen, disc = build_g(num_classes), build_d(num_classes)
    z, y = noise(4), labels(0, 1, 2, 1)
    images = run(gen, [z, y] if num_classes else z)
    for model, inputs in ((gen, [z, y] if num_classes else z), (disc, [images, y] if num_classes else images)):
        grads = _gradients(model, inputs)
        assert len(grads) == len(model.trainable_variables)
        assert all(np.all(np.isfinite(g)) for g in grads)
        assert sum(float(np.abs(g).sum()) > 0 for g in grads) >= len(grads) - 1  # only unused weights may be 0


def test_widths_and_sizes_are_validated():
    with pytest.raises(ValueError, match="needs 6 positive widths"):
        stylegan.build_style_generator(widths=(8, 8, 8))
    with pytest.raises(ValueError, match="needs 6 positive widths"):
        stylegan.build_residual_discriminator(widths=(8, 8, 8, 8, 8, 8, 8))
    with pytest.raises(ValueError, match="needs 6 positive widths"):
        stylegan.num_ws((8, 0, 8, 8, 8, 8))
    with pytest.raises(ValueError, match="needs 6 positive widths"):
        stylegan.num_ws(())
    with pytest.raises(ValueError, match="positive sizes"):
        stylegan.build_style_generator(mapping_layers=0, widths=G_WIDTHS)
    with pytest.raises(ValueError, match="group_size"):
        layers.MinibatchStdDev(0)


def test_weights_round_trip_into_a_fresh_build(g, d):
    z = noise(2)
    fresh_g = build_g(seed=9)
    assert np.abs(run(fresh_g, z) - run(g, z)).max() > 1e-4
    fresh_g.set_weights(g.get_weights())
    np.testing.assert_array_equal(run(fresh_g, z), run(g, z))
    images = run(g, z)
    fresh_d = build_d(seed=9)
    fresh_d.set_weights(d.get_weights())
    np.testing.assert_array_equal(run(fresh_d, images), run(d, images))


def test_custom_layers_serialise():
    for layer in (
        layers.ModulatedConv2D(4, 1, demodulate=False, w_index=3), layers.MinibatchStdDev(2), layers.EqualizedDense(5, lr_mul=0.01, gain=2.0),
        layers.EqualizedConv2D(3, 3, gain=2.0**0.5, use_bias=False), layers.ConstantInput(6), layers.Normalize2ndMoment(), layers.ScaledLeakyReLU(0.1),
    ):
        config = keras.saving.serialize_keras_object(layer)
        assert config["registered_name"].startswith("covgan>")
        assert keras.saving.deserialize_keras_object(config).get_config() == layer.get_config()
    d = build_d()
    clone = keras.models.model_from_json(d.to_json())
    assert [layer.name for layer in clone.layers] == [layer.name for layer in d.layers]
    gen, z = build_g(num_classes=2), noise(2)
    clone = keras.models.model_from_json(gen.to_json())
    clone.set_weights(gen.get_weights())
    np.testing.assert_array_equal(run(clone, [z, labels(0, 1)]), run(gen, [z, labels(0, 1)]))


def test_equalized_conv_is_a_convolution_with_the_kernel_scaled_at_run_time():
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    layer = layers.EqualizedConv2D(4, 3, gain=2.0**0.5)
    y = run(layer, x)
    plain = keras.layers.Conv2D(4, 3, padding="same")
    plain.build(x.shape)
    bias = np.random.default_rng(1).normal(size=(4,)).astype("float32")
    layer.bias.assign(bias)
    plain.set_weights([ops.convert_to_numpy(layer.kernel) * 2.0**0.5 / (3 * 3 * 3) ** 0.5, bias])
    np.testing.assert_allclose(run(layer, x), run(plain, x), rtol=1e-5, atol=1e-5)
    stored = ops.convert_to_numpy(layer.kernel)
    assert y.shape == (2, 6, 6, 4) and 0.7 < stored.std() < 1.3  # stored N(0, 1): Adam's steps are relative to 1


def test_the_style_ada_discriminator_has_equalised_learning_rate_and_style_does_not():
    def kinds(preset):
        cfg = config_lib.PRESETS[preset].replace(d_widths=(4, 4, 8, 8, 8, 8), mbstd_group=2)
        return {type(layer).__name__ for layer in families.discriminator_for(cfg).layers}

    assert {"EqualizedConv2D", "EqualizedDense"} <= kinds("style-ada") and "Conv2D" not in kinds("style-ada")
    assert "EqualizedConv2D" not in kinds("style") and "Conv2D" in kinds("style")
