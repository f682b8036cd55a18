"""The r3gan family (covgan_utils.nets.r3gan), the relativistic pairing loss with R1 and R2, the schedules over
images seen and the recipe presets (`r3gan`, `style-ada` and their GPU sizes), on the running Keras backend
(run under TensorFlow and JAX by `make test`)."""
import keras
import numpy as np
import pytest
from conftest import assert_same_state
from keras import ops

from covgan_utils import config, runs, sampling
from covgan_utils.nets import families, layers, r3gan, stylegan
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import loop, losses, steps

ON_JAX = keras.backend.backend() == "jax"
G_WIDTHS, D_WIDTHS = (16, 16, 8, 8, 4, 4), (4, 4, 8, 8, 8, 8)
LATENT = 8
BOTH = ("CT_COVID", "CT_NonCOVID")
MIB = 2**20


def build_g(num_classes=0, seed=0):
    keras.utils.set_random_seed(seed)
    return r3gan.build_r3gan_generator(LATENT, G_WIDTHS, blocks=1, expansion=2, group_width=4, num_classes=num_classes)


def build_d(num_classes=0, seed=0):
    keras.utils.set_random_seed(seed)
    return r3gan.build_r3gan_discriminator(D_WIDTHS, blocks=1, expansion=2, group_width=4, num_classes=num_classes)


def noise(n, seed=0):
    return np.random.RandomState(seed).standard_normal((n, LATENT)).astype(np.float32)


def labels(*values):
    return np.asarray(values, np.int32).reshape(-1, 1)  # [N, 1]


def run(model, inputs):
    return ops.convert_to_numpy(model(inputs, training=False))


def images(n, seed=1, size=128):
    return np.random.RandomState(seed).uniform(-1, 1, (n, size, size, 1)).astype(np.float32)


# ---------------------------------------------------------------- the networks

@pytest.mark.parametrize("num_classes", [0, 3])
def test_generator_and_discriminator_shapes(num_classes):
    g, d = build_g(num_classes), build_d(num_classes)
    z, y = noise(3), labels(0, 1, 2)
    fake = run(g, [z, y] if num_classes else z)
    assert g.output_shape == (None, 128, 128, 1) and fake.shape == (3, 128, 128, 1) and fake.dtype == np.float32
    assert np.isfinite(fake).all() and fake.std() > 0
    logit = run(d, [fake, y] if num_classes else fake)
    assert d.output_shape == (None, 1) and logit.shape == (3, 1) and logit.dtype == np.float32 and np.isfinite(logit).all()
    assert [t.name for t in g.inputs] == (["z", "label"] if num_classes else ["z"])
    assert [t.name for t in d.inputs] == (["image", "label"] if num_classes else ["image"])
    if num_classes:  # the class changes the image and the logit
        assert np.abs(run(g, [z, labels(2, 2, 2)]) - fake).max() > 1e-5
        assert np.abs(run(d, [fake, labels(0, 0, 0)]) - run(d, [fake, labels(2, 2, 2)])).max() > 0
    normalising = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization, keras.layers.Dropout)
    assert not any(isinstance(layer, normalising) for model in (g, d) for layer in model.layers)


def test_residual_branches_are_grouped_and_start_at_zero():
    g = build_g()
    grouped = [layer for layer in g.layers if layer.name.endswith("_grouped")]
    assert len(grouped) == 6 and all(layer.groups == layer.filters // 4 for layer in grouped)  # group width 4
    for layer in g.layers:
        if layer.name.endswith("_project"):  # fix-up: every branch starts at zero, every block as the identity
            assert not np.any(ops.convert_to_numpy(layer.kernel))
    wide = r3gan.build_r3gan_generator(LATENT, (64,) * 6, blocks=2, expansion=2, group_width=16)
    kernel = ops.convert_to_numpy(wide.get_layer("g4_block0_expand").kernel)  # [1, 1, 64, 128], fan-in 64
    expected = r3gan.LEAKY_GAIN * 12**-0.25 / 64**0.5  # He gain scaled by L^(-1/4), L = 12 blocks
    np.testing.assert_allclose(kernel.std(), expected, rtol=0.05)


def test_same_seed_same_weights_and_images():
    z = noise(2)
    for build in (build_g, lambda seed=0: build_g(3, seed)):
        a, b, other = build(seed=0), build(seed=0), build(seed=1)
        assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
        inputs = [z, labels(1, 2)] if len(a.inputs) == 2 else z
        np.testing.assert_array_equal(run(a, inputs), run(b, inputs))
        np.testing.assert_array_equal(run(a, inputs), run(a, inputs))
        assert np.abs(run(other, inputs) - run(a, inputs)).max() > 1e-6
    d1, d2 = build_d(seed=4), build_d(seed=4)
    x = images(2)
    np.testing.assert_array_equal(run(d1, x), run(d2, x))


def test_downsampling_is_the_bilinear_filter_and_keeps_constants():
    x = images(2, size=8)
    y = run(layers.Downsample2x(), x)
    assert y.shape == (2, 4, 4, 1)
    taps = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
    padded = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)), mode="symmetric")  # [2, 10, 10]
    expected = np.einsum("a,b,nab->n", taps, taps, padded[:, 2:6, 4:8])  # output pixel (1, 2)
    np.testing.assert_allclose(y[:, 1, 2, 0], expected, atol=1e-6)
    np.testing.assert_allclose(run(layers.Downsample2x(), np.full((1, 8, 8, 2), 0.7, np.float32)), 0.7, atol=1e-6)


def test_widths_and_groups_are_checked():
    with pytest.raises(ValueError, match="6 positive widths"):
        r3gan.build_r3gan_generator(LATENT, (8,) * 5)
    with pytest.raises(ValueError, match="group_width"):
        r3gan.build_r3gan_discriminator((6,) * 6, group_width=8)
    with pytest.raises(ValueError, match="group_width"):
        config.get_preset("smoke-r3gan", group_width=3)
    with pytest.raises(ValueError, match="needs 6"):
        config.get_preset("smoke", arch="r3gan")
    cfg = config.get_preset("smoke-r3gan", conditional=True, classes=BOTH)
    assert families.generator_for(cfg).name == "r3gan_generator" and len(families.discriminator_for(cfg).inputs) == 2


# ---------------------------------------------------------------- the loss and the penalties

def test_rpgan_loss_on_hand_made_logits():
    d_real, d_fake = np.array([[2.0], [0.0], [-1.0]], np.float32), np.array([[1.0], [0.0], [1.0]], np.float32)
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    d_loss = float(losses.discriminator_loss("rpgan", d_real, d_fake))
    g_loss = float(losses.generator_loss("rpgan", d_fake, d_real))
    np.testing.assert_allclose(d_loss, np.mean(softplus(-(d_real - d_fake))), rtol=1e-6)  # softplus(-1), log 2, softplus(2)
    np.testing.assert_allclose(g_loss, np.mean(softplus(-(d_fake - d_real))), rtol=1e-6)
    np.testing.assert_allclose(d_loss, (softplus(-1.0) + np.log(2.0) + softplus(2.0)) / 3, rtol=1e-6)
    shifted = float(losses.discriminator_loss("rpgan", d_real + 5.0, d_fake + 5.0))  # only the pairs' differences count
    np.testing.assert_allclose(shifted, d_loss, rtol=1e-6)
    real_c, fake_c = (ops.convert_to_numpy(t) for t in losses.centred("rpgan", d_real + 5.0, d_fake + 5.0))
    np.testing.assert_allclose(real_c.mean() + fake_c.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(real_c - fake_c, d_real - d_fake, atol=1e-6)
    assert losses.centred("non-saturating", d_real, d_fake) == (d_real, d_fake)


def _tiny_discriminator():
    """8x8 images -> logit, smooth (tanh) so central differences are accurate; a grouped convolution and the
    downsampler, as in the r3gan discriminator."""
    keras.utils.set_random_seed(3)
    x = image = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh")(x)  # [N, 8, 8, 4]
    x = keras.layers.Conv2D(4, 3, padding="same", groups=2, activation="tanh")(x)
    x = layers.Downsample2x()(x)  # [N, 4, 4, 4]
    return keras.Model(image, keras.layers.Dense(1)(keras.layers.Flatten()(x)))


def _input_grad(model):
    """d sum(model(x)) / d x on the running backend."""
    if ON_JAX:
        import jax

        return jax.grad(lambda x: ops.sum(model(x)))
    import tensorflow as tf

    def grad(x):
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = ops.sum(model(x))
        return tape.gradient(score, x)

    return grad


def _finite_difference_norms(model, x, h=1e-2):
    """||d D(x_n) / d x_n||^2 per image by central differences, every pixel at once in one batch."""
    n, size = len(x), x[0].size
    eye = np.eye(size, dtype=np.float32).reshape(size, 8, 8, 1) * h  # [P, 8, 8, 1]
    grads = []
    for image in x:
        plus, minus = run(model, image[None] + eye)[:, 0], run(model, image[None] - eye)[:, 0]  # [P]
        grads.append((plus.astype(np.float64) - minus) / (2 * h))
    return np.array([(g**2).sum() for g in grads])  # [N]


def test_r1_and_r2_equal_finite_difference_gradient_norms():
    model = _tiny_discriminator()
    grad = _input_grad(model)
    real, fake = images(3, seed=5, size=8), images(3, seed=6, size=8) * 0.5
    r1 = float(losses.r1_penalty(grad, real))
    r2 = float(losses.r2_penalty(grad, fake))
    fd_r1, fd_r2 = _finite_difference_norms(model, real).mean(), _finite_difference_norms(model, fake).mean()
    assert r1 > 1e-3 and r2 > 1e-3
    np.testing.assert_allclose(r1, fd_r1, rtol=2e-3)
    np.testing.assert_allclose(r2, fd_r2, rtol=2e-3)
    # in the objective: gamma / 2 each, k times as heavy on the lazy steps, nothing on the others
    cfg = config.get_preset("smoke-r3gan", r1_gamma=0.5, r2_gamma=3.0, r1_every=4)
    d_call = lambda x: model(x)  # noqa: E731
    total, (d_loss, _, _) = losses.d_objective(cfg, None, d_call, grad, real, fake, {}, 0.0, True)
    np.testing.assert_allclose(float(total) - float(d_loss), 4 * (0.25 * r1 + 1.5 * r2), rtol=1e-4)
    total, (d_loss, _, _) = losses.d_objective(cfg, None, d_call, grad, real, fake, {}, 0.0, False)
    assert float(total) == float(d_loss)
    assert losses.r1_is_due(cfg.replace(r1_gamma=0.0), 8) and not losses.r1_is_due(cfg.replace(r1_gamma=0.0), 9)


def test_the_generator_step_of_rpgan_draws_its_real_augmentation_from_the_seeded_stream():
    cfg = config.get_preset("smoke-r3gan", augment="translation,cutout", g_steps=2)
    gan_lib.seed_everything(cfg.seed)
    first, second = gan_lib.GAN(cfg), gan_lib.GAN(cfg)
    a, b = steps.draw(first, 4), steps.draw(second, 4)
    assert len(a["aug_g_real"]) == 2
    for x, y in zip(a["aug_g_real"] + a["aug_g"], b["aug_g_real"] + b["aug_g"]):
        np.testing.assert_array_equal(ops.convert_to_numpy(x), ops.convert_to_numpy(y))  # same seed, same draws
    assert not np.array_equal(ops.convert_to_numpy(a["aug_g_real"][0]), ops.convert_to_numpy(a["aug_g"][0]))
    assert "aug_g_real" not in steps.draw(gan_lib.GAN(cfg.replace(loss="non-saturating")), 4)


# ---------------------------------------------------------------- schedules over images seen

def test_cosine_schedule_and_ema_half_life():
    cfg = config.get_preset("smoke-r3gan", schedule_kimg=10.0, gamma_end_ratio=0.1, ema_kimg=2.0)
    at = lambda f, images: float(f(cfg, np.float32(images)))  # noqa: E731
    assert [round(at(losses.progress, i), 6) for i in (0, 5000, 10000, 20000)] == [0.0, 0.5, 1.0, 1.0]
    np.testing.assert_allclose(at(losses.gamma_scale, 2500), 1.0 - 0.9 * (1 - np.cos(np.pi / 4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(losses.ema_decay(cfg, np.float32(5000), 10)), 0.5 ** (10 / 1000), rtol=1e-6)  # half-life rising
    assert float(losses.progress(config.get_preset("smoke"), 1e6)) == 0.0 and losses.gamma_scale(config.get_preset("smoke"), 1e6) == 1.0
    ada = config.get_preset("style-ada")  # StyleGAN2-ADA: half-life 10 kimg, at most 0.05 * images seen
    assert float(losses.ema_decay(ada, np.float32(0), 32)) == 0.0  # the EMA starts as a copy
    np.testing.assert_allclose(float(losses.ema_decay(ada, np.float32(1000), 32)), 0.5 ** (32 / 50), rtol=1e-6)
    np.testing.assert_allclose(float(losses.ema_decay(ada, np.float32(1e6), 32)), 0.5 ** (32 / 10000), rtol=1e-6)
    p_cfg = cfg.replace(augment="translation", augment_p=0.0, augment_p_end=0.4)
    p, _ = losses.ada_update(p_cfg, np.float32(0.0), np.ones((4, 1), np.float32), 4, np.float32(4996))
    np.testing.assert_allclose(float(p), 0.2, rtol=1e-5)  # halfway after this step's 4 images


def _adam_step(optimizer, iterations, value=1.0, grad=0.5):
    var = keras.Variable(np.full((2,), value, np.float32))
    optimizer.build([var])
    optimizer.iterations.assign(iterations)
    optimizer.apply_gradients([(np.full((2,), grad, np.float32), var)])
    return ops.convert_to_numpy(var)


def test_scheduled_adam_uses_the_schedules_learning_rate_and_beta_2():
    cfg = config.get_preset("smoke-r3gan", schedule_kimg=1.0, lr_end_ratio=0.25, beta_2_end=0.999, beta_2=0.9, beta_1=0.0)
    steps_done, batch = 25, 10  # 250 images: progress (1 - cos(pi / 4)) / 2
    t = (1 - np.cos(np.pi / 4)) / 2
    scheduled = gan_lib.ScheduledAdam(1e-2, cfg, batch, name="s")
    plain = keras.optimizers.Adam(1e-2 * (1 + (0.25 - 1) * t), beta_1=0.0, beta_2=0.9 + (0.999 - 0.9) * t, name="p")
    np.testing.assert_allclose(_adam_step(scheduled, steps_done), _adam_step(plain, steps_done), rtol=1e-6)
    assert float(ops.convert_to_numpy(scheduled.learning_rate)) == pytest.approx(1e-2)  # the base rate: the guard scales it
    lazy = config.get_preset("style-ada")
    ratio = gan_lib.lazy_ratio(lazy)
    assert ratio == 16 / 17 and gan_lib.lazy_ratio(lazy.replace(lazy_correction=False)) == 1.0
    corrected = gan_lib.ScheduledAdam(2e-3, lazy, 32, ratio, name="c")
    np.testing.assert_allclose(float(corrected.beta_2), 0.99**ratio, rtol=1e-7)
    plain = keras.optimizers.Adam(2e-3 * ratio, beta_1=0.0, beta_2=0.99**ratio, name="q")
    np.testing.assert_allclose(_adam_step(corrected, 7), _adam_step(plain, 7), rtol=1e-6)


# ---------------------------------------------------------------- presets

def test_recipe_presets():
    r3, style_ada = config.PRESETS["r3gan"], config.PRESETS["style-ada"]
    assert (r3.arch, r3.loss, r3.beta_1, r3.beta_2, r3.lr_g, r3.lr_d) == ("r3gan", "rpgan", 0.0, 0.99, 2e-4, 2e-4)
    assert r3.r1_gamma == r3.r2_gamma > 0 and r3.ema_kimg > 0 and r3.schedule_kimg > 0
    assert (style_ada.lr_g, style_ada.lr_d, style_ada.beta_1, style_ada.beta_2) == (0.0025, 0.0025, 0.0, 0.99)
    assert style_ada.r1_gamma == pytest.approx(0.0002 * 128**2 / 32) and style_ada.r1_every == 16 and style_ada.lazy_correction
    assert (style_ada.augment, style_ada.ada_target, style_ada.ema_kimg, style_ada.ema_rampup) == ("ada", 0.6, 10.0, 0.05)
    g = families.generator_for(style_ada.replace(g_widths=G_WIDTHS, w_dim=8))
    mapping = [layer for layer in g.get_layer("mapping").layers if isinstance(layer, layers.EqualizedDense)]
    assert len(mapping) == 2 and all(layer.lr_mul == 0.01 for layer in mapping)
    gpu = config.PRESETS["r3gan-gpu"]
    assert [w * 4 for w in r3.g_widths] == list(gpu.g_widths) and [w * 4 for w in r3.d_widths] == list(gpu.d_widths) and gpu.batch_size == 64
    ada_widths = tuple(min(16384 // res, 512) // 2 for res in stylegan.RESOLUTIONS)  # StyleGAN2-ADA's at 128x128, halved
    assert config.PRESETS["style-ada-gpu"].g_widths == ada_widths and config.PRESETS["style-ada-gpu"].d_widths == ada_widths[::-1]


@pytest.mark.skipif(ON_JAX, reason="parameter counts: the same under every backend")
@pytest.mark.parametrize("name", ["r3gan-gpu", "style-ada-gpu"])
def test_gpu_generators_in_float16_stay_under_16_mib(name):
    g = families.generator_for(config.PRESETS[name])
    size = 2 * g.count_params()  # float16: 2 bytes a parameter
    assert size < 16 * MIB and size < 25_000_000, size


# ---------------------------------------------------------------- training

TRAIN_CASES = [
    ("smoke-r3gan", {"conditional": True, "classes": BOTH, "augment": "translation,cutout", "ada_target": 0.6, "ema_kimg": 1.0}),
    ("smoke", {"loss": "rpgan", "r1_gamma": 1.0, "r2_gamma": 1.0, "d_dropout": 0.0}),  # the loss alone, on the lean family
]


@pytest.mark.skipif(ON_JAX, reason="under JAX (CI's second pass, kept short) the resume test trains the family")
@pytest.mark.parametrize("preset, changes", TRAIN_CASES)
def test_training_steps_stay_finite_and_sample_by_seed(tmp_path, blob_images, preset, changes):
    cfg = config.get_preset(preset, epochs=1, **changes)
    labels_ = np.arange(len(blob_images)) % 2 if cfg.conditional else None
    run_dir = loop.train(cfg, tmp_path / "run", images=blob_images, labels=labels_, verbose=False)
    rows = [line for line in (run_dir / "stats.jsonl").read_text().splitlines() if line]
    assert len(rows) == 1 and "NaN" not in rows[0] and "Infinity" not in rows[0]
    generator = runs.load_generator(run_dir)
    three = sampling.generate(generator, [3, 4, 5])
    np.testing.assert_array_equal(three, sampling.generate(generator, [3, 4, 5]))
    assert three.shape == (3, 128, 128, 1) and np.isfinite(three).all()


RESUME = {  # every schedule, the EMA by images seen, ADA on the centred logits, R1 + R2 (lazy steps: tests/test_train.py)
    "epochs": 2, "augment": "translation,cutout", "ada_target": 0.6, "ema_kimg": 0.05, "ema_rampup": 0.05, "schedule_kimg": 0.1,
    "lr_end_ratio": 0.25, "gamma_end_ratio": 0.1, "beta_2_end": 0.999,
}


def test_resume_reproduces_an_uninterrupted_run(tmp_path, blob_images):
    cfg = config.get_preset("smoke-r3gan", **RESUME)
    whole = loop.train(cfg, tmp_path / "whole", images=blob_images, verbose=False)
    part = loop.train(cfg.replace(epochs=1), tmp_path / "part", images=blob_images, verbose=False)
    part = loop.train(cfg, part, images=blob_images, resume=True, verbose=False)
    with np.load(whole / "checkpoint-000002.npz") as a, np.load(part / "checkpoint-000002.npz") as b:
        assert a.files == b.files and any(k.startswith("ema/") for k in a.files)
        for key in a.files:
            assert_same_state(a[key], b[key], key)


@pytest.mark.skipif(ON_JAX, reason="tests/test_precision.py covers the precisions under JAX")
def test_mixed_precision_computes_in_bfloat16_and_keeps_losses_float32(blob_images):
    cfg = config.get_preset("smoke-r3gan", precision="mixed_bfloat16", augment="translation")
    gan_lib.seed_everything(cfg.seed)
    gan = gan_lib.GAN(cfg)
    gan.compile()
    assert gan.generator.get_layer("g8_block0_grouped").compute_dtype == "bfloat16"
    assert gan.discriminator.get_layer("d8_block0_grouped").compute_dtype == "bfloat16"
    logs = {k: ops.convert_to_numpy(v) for k, v in gan.train_step(blob_images[:10]).items()}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in logs.values()), logs
    assert all(v.dtype == "float32" for v in gan.generator.trainable_variables)
