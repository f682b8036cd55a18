"""FastGAN-style models: shapes, determinism, conditioning, SLE gating, reconstruction targets and loss,
gradients into the decoders, weight round trips (run under TensorFlow and under JAX)."""
import keras
import numpy as np
import pytest
from keras import ops

from covgan_utils.nets import fastgan

G_WIDTHS = (16, 8, 8, 4, 4, 4)  # small: every test runs in seconds
D_WIDTHS = (4, 8, 8, 16, 16)
LATENT = 8


def _noise(n=2, seed=0):
    return ops.convert_to_tensor(np.random.RandomState(seed).randn(n, LATENT).astype("float32"))  # [n, LATENT]


def _labels(*classes):
    return ops.convert_to_tensor(np.array(classes, "int32").reshape(-1, 1))  # [n, 1]


def _images(n=2, seed=0):
    return ops.convert_to_tensor(np.random.RandomState(seed).uniform(-1, 1, (n, 128, 128, 1)).astype("float32"))


def _g(num_classes=0):
    return fastgan.build_fastgan_generator(LATENT, G_WIDTHS, num_classes)


def _d(num_classes=0):
    return fastgan.build_fastgan_discriminator(D_WIDTHS, num_classes)


@pytest.mark.parametrize("num_classes", [0, 3])
def test_generator_makes_float32_images_in_range(num_classes):
    g = _g(num_classes)
    inputs = [_noise(), _labels(0, 2)] if num_classes else _noise()
    image = ops.convert_to_numpy(g(inputs, training=False))
    assert [t.name for t in g.inputs] == (["z", "label"] if num_classes else ["z"])
    assert image.shape == (2, 128, 128, 1) and image.dtype == np.float32
    assert np.all(np.abs(image) <= 1.0) and image.std() > 0


@pytest.mark.parametrize("num_classes", [0, 3])
def test_discriminator_returns_logit_and_both_reconstructions(num_classes):
    d = _d(num_classes)
    inputs = [_images(), _labels(1, 2)] if num_classes else _images()
    logit, whole, quadrants = (ops.convert_to_numpy(t) for t in d(inputs, training=True))
    assert [t.name for t in d.inputs] == (["image", "label"] if num_classes else ["image"])
    assert logit.shape == (2, 1) and whole.shape == (2, 64, 64, 1) and quadrants.shape == (2, 4, 64, 64, 1)
    assert all(t.dtype == np.float32 for t in (logit, whole, quadrants))
    assert np.all(np.abs(whole) <= 1.0) and np.all(np.abs(quadrants) <= 1.0)


def test_same_noise_same_image_and_seeded_builds_match():
    g = _g()
    first, again = (ops.convert_to_numpy(g(_noise(), training=False)) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    built = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        built.append(_g(2).get_weights() + _d(2).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*built))


def test_discriminator_is_deterministic_in_training_mode():
    d, images = _d(), _images(4)
    first, again = ([ops.convert_to_numpy(t) for t in d(images, training=True)] for _ in range(2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # no dropout, no random crop


def test_classes_change_the_image_for_the_same_noise():
    keras.utils.set_random_seed(0)
    g = _g(3)
    z = ops.concatenate([_noise(1, seed=1)] * 3 + [_noise(1, seed=2)], axis=0)  # one noise vector x3, then another
    images = ops.convert_to_numpy(g([z, _labels(0, 1, 2, 0)], training=False))
    noise_change = np.abs(images[0] - images[3]).mean()  # same class, other noise
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(images[a] - images[b]).mean() > 0.2 * noise_change > 0, (a, b)


def test_projection_adds_the_label_embedding_dot_the_pooled_features():
    d = _d(3)
    pooled_of = keras.Model(d.inputs, d.get_layer("head_pool").output)
    image = ops.concatenate([_images(1)] * 2, axis=0)
    labels = _labels(0, 2)
    logit = ops.convert_to_numpy(d([image, labels], training=False)[0])[:, 0]  # [2]
    pooled = ops.convert_to_numpy(pooled_of([image, labels], training=False))  # [2, width]
    embed = d.get_layer("label_embed").get_weights()[0]  # [3, width]
    expected = pooled[0] @ (embed[0] - embed[2])
    assert abs(expected) > 1e-6
    np.testing.assert_allclose(logit[0] - logit[1], expected, rtol=1e-4, atol=1e-6)


def test_reconstruction_targets_put_each_quadrant_in_place():
    image = np.zeros((1, 128, 128, 1), np.float32)
    for k, (r, c) in enumerate(((0, 0), (0, 64), (64, 0), (64, 64))):  # TL, TR, BL, BR
        image[0, r:r + 64, c:c + 64] = k + 1
    image[0, 0, 0] = 5.0  # one pixel: lands in the top-left 2x2 pool and the top-left quadrant
    whole, quadrants = (ops.convert_to_numpy(t) for t in fastgan.reconstruction_targets(image))
    assert whole.shape == (1, 64, 64, 1) and quadrants.shape == (1, 4, 64, 64, 1)
    for k in range(4):
        expected = np.full((64, 64, 1), k + 1, np.float32)
        expected[0, 0] = 5.0 if k == 0 else k + 1
        np.testing.assert_array_equal(quadrants[0, k], expected)
    assert whole[0, 0, 0, 0] == pytest.approx((5 + 1 + 1 + 1) / 4)
    assert whole[0, 5, 5, 0] == 1 and whole[0, 5, 40, 0] == 2 and whole[0, 40, 5, 0] == 3 and whole[0, 40, 40, 0] == 4


def test_quadrant_fold_matches_the_targets_order():
    x = ops.convert_to_tensor(np.arange(2 * 16 * 16 * 3, dtype="float32").reshape(2, 16, 16, 3))
    folded = fastgan.QuadrantsToBatch()(x)  # [8, 8, 8, 3]
    x = ops.convert_to_numpy(x)
    assert tuple(folded.shape) == (8, 8, 8, 3)
    np.testing.assert_array_equal(ops.convert_to_numpy(folded)[4 * 1 + 2], x[1, 8:, :8])  # image 1, bottom-left
    unfolded = ops.convert_to_numpy(fastgan.BatchToQuadrants()(folded))  # [2, 4, 8, 8, 3]
    np.testing.assert_array_equal(unfolded[:, 1], x[:, :8, 8:])  # top-right


def test_reconstruction_loss_is_zero_at_the_targets_and_l1_otherwise():
    images = _images()
    whole, quadrants = fastgan.reconstruction_targets(images)
    assert float(fastgan.reconstruction_loss(images, whole, quadrants)) == pytest.approx(0.0, abs=1e-7)
    loss = float(fastgan.reconstruction_loss(images, whole + 0.25, quadrants - 0.5))
    assert loss == pytest.approx(0.75, rel=1e-5)


def _d_gradients(d, images):
    """Gradients of sum(logit) + reconstruction loss w.r.t. D's trainable weights, by variable path."""
    paths = [v.path for v in d.trainable_variables]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            logit, whole, quadrants = d(images, training=True)
            loss = ops.sum(logit) + fastgan.reconstruction_loss(images, whole, quadrants)
        grads = tape.gradient(loss, d.trainable_variables)
    elif keras.backend.backend() == "jax":
        import jax

        ntv = [v.value for v in d.non_trainable_variables]

        def loss_fn(tv):
            (logit, whole, quadrants), _ = d.stateless_call(tv, ntv, images, training=True)
            return ops.sum(logit) + fastgan.reconstruction_loss(images, whole, quadrants)

        grads = jax.grad(loss_fn)([v.value for v in d.trainable_variables])
    else:
        pytest.skip(f"no gradient path for backend {keras.backend.backend()}")
    return {p: ops.convert_to_numpy(g) for p, g in zip(paths, grads)}


def test_gradients_are_finite_and_reach_the_decoders():
    grads = _d_gradients(_d(), _images())
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    for prefix in ("dec_whole_up0_conv", "dec_whole_out", "dec_part_up0_conv", "dec_part_out", "logit", "down1_conv"):
        kernels = [g for p, g in grads.items() if p.startswith(prefix + "/") and p.endswith("kernel")]
        assert kernels and all(np.abs(k).max() > 0 for k in kernels), prefix


def test_sle_gates_the_high_resolution_maps():
    g = _g()
    assert g.get_layer("sle128_pool").input.shape[1:3] == (8, 8)  # the 8x8 map gates the 128x128 one
    assert g.get_layer("sle64_pool").input.shape[1:3] == (16, 16)
    assert g.get_layer("sle128_mul").output.shape[1:3] == (128, 128)
    d = _d()
    assert d.get_layer("sle_d_pool").input.shape[1:3] == (64, 64)
    z = _noise()
    assert ops.convert_to_numpy(g(z, training=False)).std() > 1e-4
    gate = g.get_layer("sle128_gate")
    kernel, bias = gate.get_weights()
    gate.set_weights([np.zeros_like(kernel), np.full_like(bias, -40.0)])  # sigmoid ~ 0: the 128x128 map is shut
    shut = ops.convert_to_numpy(g(z, training=False))
    np.testing.assert_allclose(shut, np.tanh(g.get_layer("to_image").get_weights()[1][0]), atol=1e-6)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="6 positive integer widths"):
        fastgan.build_fastgan_generator(widths=(64, 32, 16, 8, 4))
    with pytest.raises(ValueError, match="5 positive integer widths"):
        fastgan.build_fastgan_discriminator(widths=(16, 32, 64, 128))
    with pytest.raises(ValueError, match="positive integer widths"):
        fastgan.build_fastgan_discriminator(widths=(16, 32, 0, 128, 256))
    with pytest.raises(ValueError, match="num_classes"):
        fastgan.build_fastgan_generator(num_classes=-1)
    with pytest.raises(ValueError, match="latent_dim"):
        fastgan.build_fastgan_generator(latent_dim=0)


def test_weights_round_trip_into_a_fresh_model():
    g, d = _g(3), _d(3)
    z, labels, images = _noise(), _labels(0, 2), _images()
    keras.utils.set_random_seed(123)
    g2, d2 = _g(3), _d(3)
    before = ops.convert_to_numpy(g2([z, labels], training=False))
    assert not np.allclose(before, ops.convert_to_numpy(g([z, labels], training=False)))
    g2.set_weights(g.get_weights())
    d2.set_weights(d.get_weights())
    np.testing.assert_array_equal(ops.convert_to_numpy(g2([z, labels], training=False)), ops.convert_to_numpy(g([z, labels], training=False)))
    for a, b in zip(d([images, labels], training=False), d2([images, labels], training=False)):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_models_survive_a_keras_file_round_trip(tmp_path):
    g, d, z, images = _g(), _d(), _noise(), _images()
    for model, x in ((g, z), (d, images)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        out, back = keras.tree.flatten(model(x, training=False)), keras.tree.flatten(loaded(x, training=False))
        for a, b in zip(out, back):
            np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), atol=1e-6)
