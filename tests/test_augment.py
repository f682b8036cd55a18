"""Augmentation and losses in keras.ops: the same behaviour under TensorFlow and JAX (run under both by `make test`)."""
import keras
import numpy as np
import pytest

from covgan_utils import augment, losses


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_draws_are_addressed_by_seed(blob_images):
    policy = augment.parse_policy("translation,cutout,brightness,contrast")
    a = _np(augment.augment(blob_images[:8], policy, 1.0, seed=3))
    b = _np(augment.augment(blob_images[:8], policy, 1.0, seed=3))
    c = _np(augment.augment(blob_images[:8], policy, 1.0, seed=4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1


def test_probability_zero_is_the_identity_and_one_changes_every_image(blob_images):
    policy = augment.parse_policy("translation,cutout")
    np.testing.assert_array_equal(_np(augment.augment(blob_images[:8], policy, 0.0, seed=0)), blob_images[:8])
    changed = _np(augment.augment(blob_images[:8], policy, 1.0, seed=0))
    assert (np.abs(changed - blob_images[:8]).reshape(8, -1).max(axis=1) > 0).all()


def test_translation_moves_whole_pixels_and_fills_black():
    image = np.full((1, 128, 128, 1), -1.0, np.float32)
    image[0, 60, 70, 0] = 1.0
    u = np.array([[[0.0, 0.99, 0.0]]], np.float32)  # apply; dy = +16 (largest), dx = -16 (smallest)
    moved = _np(augment.apply(image, ("translation",), 1.0, u))
    assert moved[0, 76, 54, 0] == 1.0 and moved.sum() == image.sum()


def test_unknown_op_is_refused():
    with pytest.raises(ValueError, match="choose from"):
        augment.parse_policy("translation,rotate")


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_losses_are_finite_and_order_real_above_fake(loss):
    real, fake = np.full((4, 1), 3.0, np.float32), np.full((4, 1), -3.0, np.float32)
    good = float(_np(losses.discriminator_loss(loss, real, fake)))
    bad = float(_np(losses.discriminator_loss(loss, fake, real)))
    assert np.isfinite(good) and np.isfinite(bad) and good < bad
    assert float(_np(losses.generator_loss(loss, real))) < float(_np(losses.generator_loss(loss, fake)))


def test_ada_moves_p_towards_the_target():
    from covgan_utils import config

    cfg = config.get_preset("best")
    up, r_t = losses.ada_update(cfg, 0.5, np.ones((32, 1), np.float32), 32)  # D sure of every real: overfitting
    down, _ = losses.ada_update(cfg, 0.5, -np.ones((32, 1), np.float32), 32)
    assert float(_np(r_t)) == 1.0 and float(_np(up)) > 0.5 > float(_np(down))
