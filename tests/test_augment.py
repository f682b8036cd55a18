"""Augmentation, its leak measurement and losses in keras.ops: the same behaviour under TensorFlow and JAX (run under both by `make test`)."""
import functools
import math
import statistics

import keras
import numpy as np
import pytest

from covgan_utils import config
from covgan_utils.metrics import quality
from covgan_utils.training import augment, losses

NEW_OPS = ("xflip", "int_translation", "iso_scale", "rotate", "aniso_scale", "frac_translation", "gamma")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _u(*rows):
    """Hand-made draws [N, ops, DRAWS_PER_OP] from nested lists (missing draws are 0.5)."""
    u = np.full((len(rows), len(rows[0]), augment.DRAWS_PER_OP), 0.5, np.float32)
    for i, row in enumerate(rows):
        for k, draws in enumerate(row):
            u[i, k, :len(draws)] = draws
    return u


def _z_to_u(z):
    """The uniform draw that `augment` turns into the standard normal number z."""
    return statistics.NormalDist().cdf(z)


def _centroid(image):
    """(row, col) centre of mass of image + 1 (background -1 weighs nothing)."""
    weight = image[..., 0] + 1.0
    rows, cols = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return (weight * rows).sum() / weight.sum(), (weight * cols).sum() / weight.sum()


def _square(side=32, size=128):
    image = np.full((1, size, size, 1), -1.0, np.float32)
    lo = (size - side) // 2
    image[0, lo:lo + side, lo:lo + side, 0] = 1.0
    return image


def _smooth_noise():
    """[1, 128, 128, 1] blocky noise in [-1, 1] (8x8 blocks)."""
    rng = np.random.RandomState(1)
    coarse = rng.uniform(-1, 1, (16, 16)).astype(np.float32)
    return np.kron(coarse, np.ones((8, 8), np.float32))[None, ..., None]  # [1, 128, 128, 1]


@functools.lru_cache(maxsize=None)
def _bodies(n=200, seed=0):
    """n upright CT-like 'bodies' [n, 128, 128, 1]: wide ellipses with a bright spot on the image-right side."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32)
    out = []
    for _ in range(n):
        cx, cy = 63.5 + rng.uniform(-3, 3), 63.5 + rng.uniform(-3, 3)
        a, b = rng.uniform(39, 41), rng.uniform(27, 28)
        body = np.tanh(3.0 * (1.0 - np.hypot((xx - cx) / a, (yy - cy) / b)) * 8.0)
        spot = np.exp(-((xx - cx - 15) ** 2 + (yy - cy) ** 2) / 150.0)
        out.append(np.clip(0.6 * body - 0.4 + 0.8 * spot * (body > 0), -1.0, 1.0))
    bodies = np.stack(out)[..., None].astype(np.float32)
    bodies.flags.writeable = False  # cached: shared by the tests
    return bodies


# ---------------------------------------------------------------- draws, probability, policy

def test_draws_are_addressed_by_seed(blob_images):
    policy = augment.parse_policy("ada,translation")
    a = _np(augment.augment(blob_images[:8], policy, 1.0, seed=3))
    b = _np(augment.augment(blob_images[:8], policy, 1.0, seed=3))
    c = _np(augment.augment(blob_images[:8], policy, 1.0, seed=4))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    d = _np(augment.augment(blob_images[:8], policy, 1.0, seed=keras.random.SeedGenerator(5)))
    e = _np(augment.augment(blob_images[:8], policy, 1.0, seed=keras.random.SeedGenerator(5)))
    np.testing.assert_array_equal(d, e)


def test_probability_zero_is_the_identity_and_one_changes_every_image(blob_images):
    policy = augment.parse_policy("translation,cutout")
    np.testing.assert_array_equal(_np(augment.augment(blob_images[:8], policy, 0.0, seed=0)), blob_images[:8])
    changed = _np(augment.augment(blob_images[:8], policy, 1.0, seed=0))
    assert (np.abs(changed - blob_images[:8]).reshape(8, -1).max(axis=1) > 0).all()


@pytest.mark.parametrize("name", NEW_OPS)
def test_every_new_op_is_the_identity_at_p0_and_changes_every_image_at_p1(blob_images, name):
    images = blob_images[:8]
    u = _np(augment.draw(8, (name,), seed=11))
    np.testing.assert_array_equal(_np(augment.apply(images, (name,), 0.0, u)), images)
    np.testing.assert_array_equal(_np(augment.apply(images, (name,), keras.ops.convert_to_tensor(1e-9), u)), images)
    changed = _np(augment.apply(images, (name,), 1.0, u))
    assert (np.abs(changed - images).reshape(8, -1).max(axis=1) > 1e-3).all()


@pytest.mark.parametrize("name", augment.OPS)
def test_an_op_leaves_the_image_whose_draw_is_not_below_p(blob_images, name):
    u = _u(*[[[0.9, 0.8, 0.1]]] * 2)
    u[0, 0, 0] = 0.1  # first image chosen at p = 0.5, second not
    out = _np(augment.apply(blob_images[:2], (name,), 0.5, u))
    np.testing.assert_array_equal(out[1], blob_images[1])
    assert np.abs(out[0] - blob_images[0]).max() > 1e-3


def test_ada_alias_expands_in_order_and_mixes_with_names():
    ada = ("xflip", "int_translation", "iso_scale", "rotate", "aniso_scale", "frac_translation",
           "brightness", "contrast", "gamma", "cutout")
    assert augment.parse_policy("ada") == ada
    assert augment.parse_policy(" translation , ada,cutout") == ("translation",) + ada + ("cutout",)
    assert set(ada) <= set(augment.OPS) and augment.parse_policy("") == ()


def test_unknown_op_is_refused_in_one_line_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match="choose from") as err:
        augment.parse_policy("translation,rotate,spin")
    message = str(err.value)
    assert "'spin'" in message and "\n" not in message
    assert all(name in message for name in augment.OPS) and "ada" in message


# ---------------------------------------------------------------- what each op does

def test_translation_moves_whole_pixels_and_fills_black():
    image = np.full((1, 128, 128, 1), -1.0, np.float32)
    image[0, 60, 70, 0] = 1.0
    u = np.array([[[0.0, 0.99, 0.0]]], np.float32)  # apply; dy = +16 (largest), dx = -16 (smallest)
    moved = _np(augment.apply(image, ("translation",), 1.0, u))
    assert moved[0, 76, 54, 0] == 1.0 and moved.sum() == image.sum()


def test_xflip_mirrors_exactly(blob_images):
    flipped = _np(augment.apply(blob_images[:4], ("xflip",), 1.0, _u(*[[[0.0]]] * 4)))
    np.testing.assert_array_equal(flipped, blob_images[:4, :, ::-1])


def test_int_translation_reflects_instead_of_filling_black():
    rng = np.random.RandomState(0)
    image = rng.uniform(0.0, 1.0, (1, 128, 128, 1)).astype(np.float32)  # bright everywhere: black fill would show
    moved = _np(augment.apply(image, ("int_translation",), 1.0, _u([[0.0, 0.0, 0.99]])))  # dy = -16, dx = +16
    np.testing.assert_array_equal(moved[0, :112, 16:], image[0, 16:, :112])  # the shifted part
    np.testing.assert_array_equal(moved[0, :112, :16], image[0, 16:, 16:0:-1])  # mirrored left border
    np.testing.assert_array_equal(moved[0, 112:, 16:], image[0, 126:110:-1, :112])  # mirrored bottom border
    assert moved.min() >= 0.0
    assert abs(moved.mean() - image.mean()) < 0.01 and abs(moved.std() - image.std()) < 0.01


def test_rotate_turns_an_off_centre_dot_by_the_drawn_angle():
    image = np.full((1, 128, 128, 1), -1.0, np.float32)
    image[0, 64, 100, 0] = 1.0
    for draw in (0.9, 0.2):
        angle = math.radians(augment.ROTATE_DEGREES * (2 * draw - 1))  # counterclockwise as displayed
        turned = _np(augment.apply(image, ("rotate",), 1.0, _u([[0.0, draw]])))
        dx, dy_up = 100 - 63.5, 63.5 - 64
        want_col = 63.5 + math.cos(angle) * dx - math.sin(angle) * dy_up
        want_row = 63.5 - (math.sin(angle) * dx + math.cos(angle) * dy_up)
        row, col = _centroid(turned[0])
        assert abs(row - want_row) < 1.0 and abs(col - want_col) < 1.0
        assert abs(row - 64) > 5  # it did move


def test_iso_scale_scales_a_centred_square_area_by_s_squared():
    for z in (2.0, -1.5):
        s = 2 ** (0.2 * z)
        scaled = _np(augment.apply(_square(), ("iso_scale",), 1.0, _u([[0.0, _z_to_u(z)]])))
        area = (scaled > 0).sum()
        assert abs(area / (32 * 32 * s * s) - 1) < 0.05
        np.testing.assert_allclose(_centroid(scaled[0]), (63.5, 63.5), atol=0.05)


def test_aniso_scale_widens_x_and_shortens_y_by_the_same_factor():
    s = 2 ** (0.2 * 2.0)
    out = _np(augment.apply(_square(), ("aniso_scale",), 1.0, _u([[0.0, _z_to_u(2.0)]])))[0, ..., 0]
    width, height = (out[64] > 0).sum(), (out[:, 64] > 0).sum()
    assert abs(width - 32 * s) <= 1.0 and abs(height - 32 / s) <= 1.0


def test_frac_translation_moves_by_a_normal_fraction_of_the_size():
    image = _square()
    moved = _np(augment.apply(image, ("frac_translation",), 1.0, _u([[0.0, _z_to_u(1.0), _z_to_u(-0.5)]])))
    row, col = _centroid(moved[0])
    assert abs(col - (63.5 + 0.125 * 128)) < 0.1 and abs(row - (63.5 - 0.5 * 0.125 * 128)) < 0.1


def test_gamma_raises_the_unit_range_image_to_a_lognormal_power():
    image = np.linspace(-1, 1, 128 * 128, dtype=np.float32).reshape(1, 128, 128, 1)
    g = math.exp(augment.GAMMA_STD * 1.5)
    out = _np(augment.apply(image, ("gamma",), 1.0, _u([[0.0, _z_to_u(1.5)]])))
    np.testing.assert_allclose(out, 2 * ((image + 1) / 2) ** g - 1, atol=1e-5)


def test_consecutive_geometric_ops_resample_once():
    image = _smooth_noise()
    there_and_back = _u([[0.0, 0.9], [0.0, 0.1]])  # rotate +12 degrees, then -12 degrees
    once = _np(augment.apply(image, ("rotate", "rotate"), 1.0, there_and_back))
    twice = _np(augment.apply(_np(augment.apply(image, ("rotate",), 1.0, there_and_back[:, :1])), ("rotate",), 1.0,
                              there_and_back[:, 1:]))
    assert np.abs(once - image).max() < 1e-4  # one composed (identity) matrix: no interpolation blur
    assert np.abs(twice - image).max() > 1e-2  # two resamplings blur


# ---------------------------------------------------------------- the whole pipeline

def _input_gradient(images, policy, p, u):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(augment.apply(x, policy, p, tf.constant(u)))
        return tape.gradient(total, x).numpy()
    import jax

    return np.asarray(jax.grad(lambda x: keras.ops.sum(augment.apply(x, policy, p, u)))(images))


def test_ada_pipeline_is_finite_in_a_sane_range_with_finite_gradients(blob_images):
    policy = augment.parse_policy("ada")
    u = _np(augment.draw(16, policy, seed=7))
    out = _np(augment.apply(blob_images[:16], policy, 1.0, u))
    assert np.isfinite(out).all() and -2.5 < out.min() and out.max() < 2.5
    grad = _input_gradient(blob_images[:16], policy, 1.0, u)
    assert grad.shape == blob_images[:16].shape and np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_ada_pipeline_compiles_with_an_unknown_batch_size(blob_images):
    policy = augment.parse_policy("ada")
    u = _np(augment.draw(8, policy, seed=8))
    eager = _np(augment.apply(blob_images[:8], policy, 0.7, u))
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        spec = [tf.TensorSpec([None, 128, 128, 1]), tf.TensorSpec([None, len(policy), augment.DRAWS_PER_OP])]
        compiled = tf.function(lambda x, v: augment.apply(x, policy, tf.constant(0.7), v), input_signature=spec)
    else:
        import jax

        compiled = jax.jit(lambda x, v: augment.apply(x, policy, 0.7, v))
    np.testing.assert_allclose(_np(compiled(blob_images[:8], u)), eager, atol=1e-5)


# ---------------------------------------------------------------- leak measurement

def _stat(images, name):
    return quality.orientation_stats(images)[:, quality.ORIENTATION_STATS.index(name)]


def test_orientation_stats_read_angle_elongation_area_and_mirror():
    body = _bodies(1)
    tilted = _np(augment.apply(body, ("rotate",), 1.0, _u([[0.0, 1.0]])))  # +15 degrees
    stats = quality.orientation_stats(np.concatenate([body, tilted, body[:, :, ::-1]]))
    angle, elongation, area, _, _, asymmetry = stats.T
    assert abs(angle[0]) < 1.0 and abs(angle[1] - 15.0) < 1.0
    assert 1.3 < elongation[0] < 1.6 and abs(elongation[1] - elongation[0]) < 0.05
    assert 0.15 < area[0] < 0.3
    assert asymmetry[0] > 0.04 and abs(asymmetry[2] + asymmetry[0]) < 1e-6
    blank = quality.orientation_stats(-np.ones((1, 128, 128, 1)))[0]
    assert blank[2] == 0.0 and np.isnan(np.delete(blank, 2)).all()


def test_ks_statistic_is_zero_for_equal_samples_and_one_for_disjoint():
    a = np.arange(10.0)
    assert quality.ks_statistic(a, a[::-1]) == 0.0 and quality.ks_statistic(a, a + 100) == 1.0
    assert quality.ks_statistic(a, np.r_[a, np.nan]) == 0.0


@pytest.mark.parametrize("name,stat", [("rotate", "angle"), ("iso_scale", "area"), ("aniso_scale", "elongation"),
                                       ("frac_translation", "centroid_x"), ("xflip", "asymmetry")])
def test_leak_report_sees_a_full_augmentation_and_nothing_at_p0(name, stat):
    real = _bodies()
    report = quality.leak_report(_np(augment.augment(real, (name,), 1.0, seed=21)), real)[stat]
    assert report["ks"] > 0.4 > 2 * report["ks_95"], report
    if name == "xflip":  # a mirror flips the sign of the asymmetry rather than widening it
        assert report["real_mean"] > 0.04 and report["generated_mean"] < -0.04
    else:
        assert report["generated_std"] > 3 * report["real_std"], report
    none = quality.leak_report(_np(augment.augment(real, (name,), 0.0, seed=21)), real)
    assert set(none) == set(quality.ORIENTATION_STATS) and all(row["ks"] == 0.0 for row in none.values())


def test_leak_report_places_p08_between_none_and_full():
    real = _bodies()
    u = _np(augment.draw(len(real), ("rotate",), seed=22))
    partial, full = (_np(augment.apply(real, ("rotate",), p, u)) for p in (0.8, 1.0))
    angle = {name: np.abs(_stat(images, "angle")) for name, images in (("real", real), ("partial", partial), ("full", full))}
    unturned = {name: (values < 0.5).mean() for name, values in angle.items()}
    assert unturned["real"] == 1.0 and 0.15 < unturned["partial"] < 0.35 and unturned["full"] < 0.1
    ks_full = quality.ks_statistic(angle["full"], angle["real"])
    ks_partial_real = quality.ks_statistic(angle["partial"], angle["real"])
    ks_partial_full = quality.ks_statistic(angle["partial"], angle["full"])
    assert ks_partial_real < ks_full - 0.1 and ks_partial_full > 0.1


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_losses_are_finite_and_order_real_above_fake(loss):
    real, fake = np.full((4, 1), 3.0, np.float32), np.full((4, 1), -3.0, np.float32)
    good = float(_np(losses.discriminator_loss(loss, real, fake)))
    bad = float(_np(losses.discriminator_loss(loss, fake, real)))
    assert np.isfinite(good) and np.isfinite(bad) and good < bad
    paired = np.zeros((4, 1), np.float32) if loss == "rpgan" else None  # rpgan pairs each sample with a real image
    assert float(_np(losses.generator_loss(loss, real, paired))) < float(_np(losses.generator_loss(loss, fake, paired)))
    if loss == "rpgan":
        with pytest.raises(ValueError, match="pass d_real"):
            losses.generator_loss(loss, real)


def test_ada_moves_p_towards_the_target():

    cfg = config.get_preset("best")
    up, r_t = losses.ada_update(cfg, 0.5, np.ones((32, 1), np.float32), 32)  # D sure of every real: overfitting
    down, _ = losses.ada_update(cfg, 0.5, -np.ones((32, 1), np.float32), 32)
    assert float(_np(r_t)) == 1.0 and float(_np(up)) > 0.5 > float(_np(down))
