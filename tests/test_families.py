"""Model families, noise inputs and class conditioning on the training path: every option trains finite
steps, resumes to the same state, samples deterministically by seed and answers bad input with one line
(run under TensorFlow and JAX by `make test`)."""
import keras
import numpy as np
import pytest
from conftest import assert_same_state
from PIL import Image

from covgan_utils import cli, config, runs, sampling
from covgan_utils.nets import dcgan, families
from covgan_utils.nets.layers import NoiseInjection
from covgan_utils.training import loop

BOTH = ("CT_COVID", "CT_NonCOVID")
CASES = {  # name -> (preset, changes)
    "lean+noise": ("smoke", {"g_noise": True}),
    "lean+cond": ("smoke", {"conditional": True, "classes": BOTH}),
    "style": ("smoke-style", {}),
    "style+cond": ("smoke-style", {"conditional": True, "classes": BOTH}),
    "fastgan": ("smoke-fastgan", {}),
    "fastgan+cond+ada": ("smoke-fastgan", {"conditional": True, "classes": BOTH, "augment": "ada"}),
}
# Under JAX (the second pass of `make test`) a representative subset keeps CI short: a conditional style
# model and the multi-output fastgan discriminator with classes and full ADA (noise inputs train in the resume test).
ON_JAX = keras.backend.backend() == "jax"
TRAIN_CASES = ["style+cond", "fastgan+cond+ada"] if ON_JAX else list(CASES)
RESUME_CASES = ["lean+noise"] if ON_JAX else ["lean+noise", "fastgan+cond+ada"]
RECIPE = {"loss": "non-saturating", "ema_decay": 0.9, "augment": "translation,cutout", "ada_target": 0.6}
RESUME_RECIPE = {**RECIPE, "r1_gamma": 1.0}  # every piece of state a step touches (lazy R1 and 2:1: tests/test_train.py)


def _config(case, **changes):
    preset, extra = CASES[case]
    return config.get_preset(preset, **{**RECIPE, **extra, **changes})


def _labels(cfg, n):
    return np.arange(n) % 2 if cfg.conditional else None


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_family_trains_finite_steps_and_samples_by_seed(tmp_path, blob_images, case):
    cfg = _config(case, epochs=1)
    run = loop.train(cfg, tmp_path / "run", images=blob_images, labels=_labels(cfg, len(blob_images)), verbose=False)
    rows = [line for line in (run / "stats.jsonl").read_text().splitlines() if line]
    assert len(rows) == 1 and "NaN" not in rows[0] and "Infinity" not in rows[0]
    generator = runs.load_generator(run)
    three, one = sampling.generate(generator, [3, 4, 5]), sampling.generate(generator, [5])
    np.testing.assert_allclose(three[2], one[0], atol=1e-5)  # the image of a seed does not depend on its batch
    np.testing.assert_array_equal(three, sampling.generate(generator, [3, 4, 5]))
    assert three.shape == (3, 128, 128, 1) and np.isfinite(three).all() and -1 <= three.min() and three.max() <= 1
    if cfg.conditional:
        assert np.abs(sampling.generate(generator, [3, 4, 5], label=1) - three).max() > 1e-4  # the class input is used


@pytest.mark.parametrize("case", RESUME_CASES)  # noise inputs' random streams; a multi-output D, classes, ADA
def test_family_resume_reproduces_an_uninterrupted_run(tmp_path, blob_images, case):
    preset, extra = CASES[case]
    cfg = config.get_preset(preset, epochs=2, **{**RESUME_RECIPE, **extra})
    labels = _labels(cfg, len(blob_images))
    whole = loop.train(cfg, tmp_path / "whole", images=blob_images, labels=labels, verbose=False)
    part = loop.train(cfg.replace(epochs=1), tmp_path / "part", images=blob_images, labels=labels, verbose=False)
    part = loop.train(cfg, part, images=blob_images, labels=labels, resume=True, verbose=False)
    with np.load(whole / "checkpoint-000002.npz") as a, np.load(part / "checkpoint-000002.npz") as b:
        assert a.files == b.files and any(k.startswith("ema/") for k in a.files)
        for key in a.files:
            assert_same_state(a[key], b[key], key)


def test_each_family_builds_the_models_its_config_names():
    for case, kind in (("lean+noise", "lean"), ("style", "style"), ("fastgan", "fastgan")):
        cfg = _config(case)
        g, d = families.generator_for(cfg), families.discriminator_for(cfg)
        assert g.name.startswith(kind) and d.name.split("_")[0] in (kind, "residual")
        assert g.output.shape[1:] == (128, 128, 1)
    cond = families.generator_for(_config("style+cond"))
    assert sampling.is_conditional(cond) and sampling.latent_dim_of(cond) == 100


def test_noise_inputs_start_silent_are_fresh_in_training_and_fixed_at_inference():
    g = dcgan.build_generator("lean", widths=(8, 8, 4, 4, 4), base_width=16, noise_inputs=True)
    noise = [layer for layer in g.layers if isinstance(layer, NoiseInjection)]
    assert len(noise) == 5 and all(float(np.abs(np.asarray(n.strength.numpy())).max()) == 0.0 for n in noise)
    assert len({float(np.asarray(n.const_noise.numpy()).ravel()[0]) for n in noise}) == 5  # distinct constant maps
    for layer in noise:
        layer.strength.assign(np.ones(layer.strength.shape, np.float32))
    z = sampling.noise_for_seeds([1, 2])
    np.testing.assert_array_equal(np.asarray(g(z)), np.asarray(g(z)))
    assert np.abs(np.asarray(g(z, training=True)) - np.asarray(g(z, training=True))).max() > 1e-4


def test_truncation_pulls_style_samples_to_one_image_at_psi_zero(tmp_path, blob_images):
    run = loop.train(config.get_preset("smoke-style", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    generator = runs.load_generator(run)
    same = sampling.generate(generator, [1, 2, 3], truncation=0.0)
    assert np.abs(same - same[:1]).max() < 1e-5
    np.testing.assert_allclose(sampling.generate(generator, [1, 2], truncation=1.0), sampling.generate(generator, [1, 2]), atol=1e-6)
    lean = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "lean", images=blob_images, verbose=False)
    with pytest.raises(ValueError, match="style-based"):
        sampling.generate(runs.load_generator(lean), [1], truncation=0.5)


def test_conditional_training_checks_its_classes_and_labels(tmp_path, blob_images):
    with pytest.raises(ValueError, match="two or more classes"):
        loop.train(config.get_preset("smoke", conditional=True), tmp_path / "a", images=blob_images, labels=np.zeros(40), verbose=False)
    cfg = config.get_preset("smoke", conditional=True, classes=BOTH)
    with pytest.raises(ValueError, match="needs class labels"):
        loop.train(cfg, tmp_path / "b", images=blob_images, verbose=False)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        loop.train(cfg, tmp_path / "c", images=blob_images, labels=np.full(40, 2), verbose=False)


def test_sample_class_on_the_command_line(tmp_path, blob_images, capsys):
    cond = loop.train(_config("lean+cond", epochs=1), tmp_path / "cond", images=blob_images, labels=np.arange(40) % 2, verbose=False)
    plain = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "plain", images=blob_images, verbose=False)
    for cls in ("covid", "non-covid"):
        assert cli.main(["sample", "--run", str(cond), "--n", "2", "--out", str(tmp_path / cls), "--class", cls]) == 0
    a, b = (np.asarray(Image.open(tmp_path / c / "seed0.png")) for c in ("covid", "non-covid"))
    assert np.abs(a.astype(int) - b).max() > 0
    assert cli.main(["sample", "--run", str(plain), "--n", "1", "--out", str(tmp_path / "p"), "--class", "covid"]) == 0  # trained on COVID alone
    capsys.readouterr()
    assert cli.main(["sample", "--run", str(plain), "--n", "1", "--out", str(tmp_path / "q"), "--class", "non-covid"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unconditional" in err and "conditional=true" in err
    assert cli.main(["sample", "--run", str(plain), "--n", "1", "--out", str(tmp_path / "r"), "--truncation", "0.5"]) == 2
    assert "style-based" in capsys.readouterr().err
    assert cli.main(["interpolate", "--run", str(cond), "--seed-a", "1", "--seed-b", "2", "--steps", "3", "--out", str(tmp_path / "s.png"), "--class", "non-covid"]) == 0


def test_family_widths_are_checked_with_a_helpful_error():
    with pytest.raises(ValueError, match="6"):
        families.generator_for(config.get_preset("smoke", arch="style"))
    with pytest.raises(ValueError, match="paper"):
        families.generator_for(config.get_preset("paper", conditional=True, classes=BOTH))
