"""The paper code's scaling of the training data (`covgan_utils.data.scaling`), on real scans, and its use in training."""
import numpy as np
import pytest
from PIL import Image

from covgan_utils import cli, config, runs, sampling
from covgan_utils.data import dataset, scaling
from covgan_utils.training import gan as gan_lib
from covgan_utils.training import loop

TOP = -1.0 + 2.0 / 255.0  # white after the paper code's (x - 127.5) / 127.5 on floats in [0, 1]


@pytest.fixture(scope="module")
def scans(real_data):
    """Eight real COVID scans [8, 128, 128, 1] in [-1, 1]."""
    return dataset.load_images(real_data, flip=False)[:8]


def test_the_config_field_takes_the_scalings_only():
    assert config.Config(scaling="paper-code").scaling == "paper-code"
    with pytest.raises(ValueError, match="scaling.*paper-code"):
        config.Config(scaling="paper")
    assert scaling.PAPER_CODE_TOP == pytest.approx(TOP)


def test_full_scaling_leaves_the_scans_alone(scans):
    np.testing.assert_array_equal(scaling.to_training(scans, "full"), scans)
    np.testing.assert_array_equal(scaling.to_view(scans, "full"), scans)


def test_paper_code_squeezes_real_scans_into_the_near_black_range(scans):
    squeezed = scaling.to_training(scans, "paper-code")
    assert squeezed.dtype == np.float32 and squeezed.shape == scans.shape
    assert squeezed.min() >= -1.0 and squeezed.max() <= TOP + 1e-7
    assert squeezed.max() > TOP - 0.1 * (TOP + 1.0)  # the bright end of the scans reaches the top of the range
    paper = ((scans + 1.0) / 2.0 - 127.5) / 127.5  # what the paper's code computed
    np.testing.assert_allclose(squeezed, paper, rtol=0, atol=1e-6)


def test_paper_code_histogram_is_the_full_histogram_compressed(scans):
    edges = np.linspace(-1.0, 1.0, 33)
    full, _ = np.histogram(scans, bins=edges)
    squeezed, _ = np.histogram(scaling.to_training(scans, "paper-code"), bins=scaling.to_training(edges, "paper-code"))
    assert full.sum() == squeezed.sum() == scans.size
    # float32 rounding may move a pixel lying within 1.5e-5 of an edge into the neighbouring bin, no other
    near_edge = int(sum((np.abs(scans - e) < 3e-5).sum() for e in edges[1:-1]))
    assert np.abs(full - squeezed).sum() <= 2 * near_edge
    assert (full > 0).sum() > 16  # the scans fill the range: the comparison is not between two empty histograms


def test_viewing_undoes_the_training_scaling(scans):
    for name in scaling.SCALINGS:
        back = scaling.to_view(scaling.to_training(scans, name), name)
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, scans, rtol=0, atol=2e-5)  # float32 resolution near -1 is 6e-8, x 255 / 2 back


def test_viewing_clips_outputs_above_the_paper_range_to_white():
    outputs = np.array([-1.0, TOP, -0.5, 1.0], np.float32)
    np.testing.assert_allclose(scaling.to_view(outputs, "paper-code"), [-1.0, 1.0, 1.0, 1.0], atol=1e-5)


def test_unknown_scaling_is_a_one_line_error():
    for fn in (scaling.to_training, scaling.to_view):
        with pytest.raises(ValueError, match=r"unknown scaling 'paper'; choose from full, paper-code"):
            fn(np.zeros((1, 128, 128, 1), np.float32), "paper")


def raw_outputs(generator, seeds):
    """The generator's own outputs [N, 128, 128, 1] for integer seeds, before any view."""
    z = sampling.noise_for_seeds(list(seeds), sampling.latent_dim_of(generator))  # [N, latent]
    return np.asarray(generator(z, training=False))


def test_a_paper_code_gan_shows_its_samples_through_the_view():
    """GAN.sample, which the sample grids, the guard and the metric callbacks look at, views the raw outputs."""
    squeezed, full = (gan_lib.GAN(config.get_preset("smoke", scaling=name)) for name in ("paper-code", "full"))
    assert squeezed.generator.output_scaling == "paper-code" and full.generator.output_scaling == "full"
    viewed = np.clip(scaling.to_view(raw_outputs(squeezed.generator, range(4)), "paper-code"), -1, 1)
    np.testing.assert_allclose(squeezed.sample(range(4)), viewed, atol=1e-6)
    np.testing.assert_allclose(full.sample(range(4)), np.clip(raw_outputs(full.generator, range(4)), -1, 1), atol=1e-6)


def test_a_paper_code_run_is_viewed_wherever_it_is_loaded(tmp_path, blob_images):
    """A run folder's generator, as `sample`, the release and every study load it, shows its outputs through
    the run's scaling, so a paper-code run's PNGs are not near-black."""
    run_dir = loop.train(config.get_preset("smoke", scaling="paper-code", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    generator = runs.load_generator(run_dir)
    assert generator.output_scaling == "paper-code"
    viewed = np.clip(scaling.to_view(raw_outputs(generator, [6]), "paper-code"), -1, 1)[0]  # [128, 128, 1]
    assert cli.main(["sample", "--run", str(run_dir), "--n", "1", "--out", str(tmp_path / "s"), "--seed", "6"]) == 0
    png = np.asarray(Image.open(tmp_path / "s" / "seed6.png")) / 127.5 - 1.0  # [128, 128]
    np.testing.assert_allclose(png, viewed[..., 0], atol=1 / 127.5 + 1e-6)
    runs.export_release(run_dir, release_dir=tmp_path / "release")
    assert runs.load_release(tmp_path / "release").output_scaling == "paper-code"


def test_training_feeds_the_scaled_images_and_records_the_scaling(tmp_path, blob_images, monkeypatch):
    fed = []
    monkeypatch.setattr(gan_lib.GAN, "run_epochs", lambda self, data, *args, **kwargs: fed.append(data) or {})
    run_dir = loop.train(config.get_preset("smoke", scaling="paper-code", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    np.testing.assert_array_equal(fed[0], scaling.to_training(blob_images, "paper-code"))
    assert fed[0].max() <= TOP + 1e-7
    assert config.Config.load(run_dir).scaling == "paper-code"  # later sampling of the run knows how to view it
