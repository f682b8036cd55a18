"""The trained inversion encoder (f-AnoGAN izi_f), encoder-then-optimisation, and class-embedding walks."""
import keras
import numpy as np
import pytest

from covgan_utils import checkpoints, cli, config, runs, sampling
from covgan_utils.inversion import direction, inversion_encoder, projection
from covgan_utils.metrics import quality
from covgan_utils.nets import families
from covgan_utils.training import loop

ON_JAX = keras.backend.backend() == "jax"  # the JAX run of `make test` covers training, refinement and class walks
tensorflow_only = pytest.mark.skipif(ON_JAX, reason="the same code path as the JAX cases above; run under TensorFlow")


@pytest.fixture(scope="module")
def lean():
    return families.generator_for(config.get_preset("smoke"))


@pytest.fixture(scope="module")
def lean_cond():
    return families.generator_for(config.get_preset("smoke", conditional=True, classes=("CT_COVID", "CT_NonCOVID")))


def _own_images(generator, n=32, label=None):
    return sampling.generate(generator, range(100, 100 + n), label=label)  # [n, 128, 128, 1]


@pytest.fixture(scope="module")
def trained(lean):
    return inversion_encoder.train_encoder(lean, _own_images(lean), epochs=6, batch_size=16, lr=2e-3, features=None, verbose=0)


def test_encoder_learns_to_invert_the_generators_own_images(lean, trained):
    losses = trained["history"]["recon_loss"]
    assert trained["space"] == "z" and len(losses) == 6 and losses[-1] < losses[0], losses
    latents = inversion_encoder.encode(trained, _own_images(lean, 5))
    assert latents.shape == (5, 100) and np.isfinite(latents).all()
    assert lean.trainable  # the generator is frozen only while the encoder trains


def test_saved_encoder_loads_for_the_same_weights_only(tmp_path, lean, trained):
    scans = _own_images(lean, 3)
    digest = checkpoints.weights_digest(lean)
    inversion_encoder.save(trained, tmp_path / inversion_encoder.FILE, digest)
    loaded = inversion_encoder.load(tmp_path / inversion_encoder.FILE, digest)
    np.testing.assert_allclose(inversion_encoder.encode(loaded, scans[:3]), inversion_encoder.encode(trained, scans[:3]), atol=0.05)  # float16 weights
    assert inversion_encoder.load(tmp_path / inversion_encoder.FILE, "another generator") is None
    assert inversion_encoder.load(tmp_path / "missing.npz") is None


def test_encoder_then_optimisation_starts_from_the_encoders_guess(lean):
    g = runs.load_release()
    scans = sampling.generate(g, [21, 22, 23])
    untrained = {"encoder": inversion_encoder.build_encoder((100,)), "offset": np.zeros(100, np.float32), "space": "z"}  # a poor first guess
    guess = inversion_encoder.project_with("encoder", g, scans, untrained)
    refined = inversion_encoder.project_with("encoder+optimise", g, scans, untrained, num_steps=40, starts=3, features=None)
    np.testing.assert_allclose(guess["latents"], inversion_encoder.encode(untrained, scans), atol=1e-6)
    assert refined["starts_chosen"].tolist() == [0, 0, 0]  # one start: the encoder's latents
    before, after = quality.ms_ssim_paired(guess["images"], scans), quality.ms_ssim_paired(refined["images"], scans)
    assert (after > before + 0.05).all(), (before, after)
    with pytest.raises(ValueError, match="initial latents have shape"):
        projection.project(lean, scans, num_steps=5, starts=1, init=np.zeros((2, 100)), features=None)
    with pytest.raises(ValueError, match="unknown projection method 'nearest'"):
        inversion_encoder.project_with("nearest", g, scans, untrained)


@tensorflow_only
def test_style_encoders_answer_in_w_plus_around_the_average_w():
    g = families.generator_for(config.get_preset("smoke-style"))
    shape = inversion_encoder.latent_shape(g)
    assert shape == (17, 16)
    trained = inversion_encoder.train_encoder(g, _own_images(g, 16), epochs=1, batch_size=16, features=None, verbose=0)
    assert trained["space"] == "w+" and trained["offset"].shape == shape
    assert inversion_encoder.encode(trained, _own_images(g, 2)).shape == (2,) + shape


def test_conditional_encoders_need_the_class_of_each_training_scan(lean_cond):
    scans = _own_images(lean_cond, 16, label=1)
    with pytest.raises(ValueError, match="class label of every training image"):
        inversion_encoder.train_encoder(lean_cond, scans, epochs=1, batch_size=16, features=None, verbose=0)
    trained = inversion_encoder.train_encoder(lean_cond, scans, labels=np.ones(16, np.int32), epochs=1, batch_size=16, features=None, verbose=0)
    assert inversion_encoder.encode(trained, scans[:2]).shape == (2, 100)
    with pytest.raises(ValueError, match="at least batch_size=32"):
        inversion_encoder.train_encoder(lean_cond, scans, labels=np.ones(16, np.int32), verbose=0)


def test_blending_the_class_embedding_moves_one_class_to_the_other(lean_cond):
    z = sampling.noise_for_seeds([1, 2])
    as_covid, as_other = sampling.generate_from_noise(lean_cond, z, label=0), sampling.generate_from_noise(lean_cond, z, label=1)
    with sampling.blended_class(lean_cond, 1, 0, 0.0):
        np.testing.assert_allclose(sampling.generate_from_noise(lean_cond, z, label=1), as_other, atol=1e-5)
    with sampling.blended_class(lean_cond, 1, 0, 1.0):
        np.testing.assert_allclose(sampling.generate_from_noise(lean_cond, z, label=1), as_covid, atol=1e-5)
    with sampling.blended_class(lean_cond, 1, 0, 0.5):
        half = sampling.generate_from_noise(lean_cond, z, label=1)
    assert np.abs(half - as_other).max() > 1e-4 and np.abs(half - as_covid).max() > 1e-4
    np.testing.assert_array_equal(sampling.generate_from_noise(lean_cond, z, label=1), as_other)  # weights restored


def test_class_walk_starts_at_the_projection_and_ends_at_the_target_class(lean_cond):
    scan = _own_images(lean_cond, 1, label=1)[0]
    assert direction.walks_class(lean_cond)
    walk = direction.class_walk(lean_cond, scan, [0.0, 0.5, 1.0], source=1, target=0, num_steps=10, starts=1, features=None)
    assert walk["frames"].shape == (3, 128, 128, 1)
    np.testing.assert_allclose(walk["frames"][0], walk["projection"]["images"][0], atol=1e-5)
    as_target = np.clip(sampling.generate_from_noise(lean_cond, walk["projection"]["latents"], label=0), -1, 1)
    np.testing.assert_allclose(walk["frames"][-1], as_target[0], atol=1e-5)


def test_unconditional_and_style_generators_keep_the_boundary(lean):
    assert not direction.walks_class(lean)
    with pytest.raises(ValueError, match="needs a conditional generator"):
        with sampling.blended_class(lean, 1, 0, 0.5):
            pass
    style_cond = families.generator_for(config.get_preset("smoke-style", conditional=True, classes=("CT_COVID", "CT_NonCOVID")))
    assert not direction.walks_class(style_cond)


@tensorflow_only
def test_project_methods_and_the_class_walk_on_the_command_line(tmp_path, blob_images, capsys, real_data):
    """The trained encoder and the class walk on a run without them: `project` trains the encoder on the real
    training scans, as the CLI does (the data search order finds them, hence `real_data`)."""
    cond = config.get_preset("smoke", epochs=1, conditional=True, classes=("CT_COVID", "CT_NonCOVID"))
    labels = np.arange(len(blob_images)) % 2
    run = loop.train(cond, tmp_path / "run", images=blob_images, labels=labels, verbose=False)
    scan = tmp_path / "scan.png"
    sampling.save_png(blob_images[0], scan)
    argv = ["project", "--run", str(run), "--image", str(scan), "--out", str(tmp_path / "out"), "--steps", "6", "--starts", "1",
            "--method", "encoder+optimise", "--class", "non-covid"]
    assert cli.main(argv) == 0
    assert (run / inversion_encoder.FILE).is_file() and "encoder+optimise" in capsys.readouterr().out  # trained once, cached beside the run
    with np.load(tmp_path / "out" / "latents.npz") as z:
        assert z["latents"].shape == (1, 100)
    assert cli.main(["edit", "--run", str(run), "--image", str(scan), "--steps", "3", "--project-steps", "6", "--out", str(tmp_path / "walk.png")]) == 0
    assert "P(COVID) along the walk" in capsys.readouterr().out and (tmp_path / "walk.png").is_file()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["project", "--run", str(run), "--image", str(scan), "--out", str(tmp_path / "x"), "--method", "nearest"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice: 'nearest'" in err and "\n" not in err


@tensorflow_only
def test_projection_keeps_only_the_newest_compiled_losses():
    projection._COMPILED.clear()
    generators = [families.generator_for(config.get_preset("smoke", seed=s)) for s in range(projection.COMPILED_KEPT + 2)]
    for g in generators:
        projection._compiled(g, "z", None, None, None, None)
    kept = [entry[0] for entry in projection._COMPILED.values()]
    assert kept == generators[-projection.COMPILED_KEPT:]  # the oldest dropped first: a long session does not hold them all
    projection._compiled(generators[-1], "z", None, None, None, None)
    assert len(projection._COMPILED) == projection.COMPILED_KEPT  # a hit compiles nothing new
