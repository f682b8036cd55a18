"""Projection (GAN inversion) and real-to-real progression."""
import numpy as np
import pytest
from PIL import Image

from covgan_utils import cli, config, runs, sampling
from covgan_utils.inversion import projection
from covgan_utils.metrics import quality
from covgan_utils.nets import families
from covgan_utils.training import loop


def test_projecting_an_image_the_released_generator_made_recovers_it():
    g = runs.load_release()
    targets, others = sampling.generate(g, [11, 12]), sampling.generate(g, [13, 14])
    out = projection.project(g, targets, num_steps=200, starts=4, seed=0, features=None)
    assert out["space"] == "z" and out["latents"].shape == (2, 100)
    recovered = quality.ms_ssim_paired(out["images"], targets)
    assert recovered.min() >= 0.95, recovered
    assert quality.ms_ssim_paired(others, targets).max() < 0.8  # another seed's image is far: the test can fail
    prior = projection.latent_prior_report(out["latents"], "z")
    assert prior["outside_p99"] == 0.0 and abs(prior["norm_mean"] - prior["prior_norm_mean"]) < 1.5


def test_style_generators_are_projected_into_w_plus_deterministically():
    g = families.generator_for(config.get_preset("smoke-style"))
    targets = sampling.generate(g, [3])
    first = projection.project(g, targets, num_steps=40, starts=2, seed=5, features=None)
    again = projection.project(g, targets, num_steps=40, starts=2, seed=5, features=None)
    assert first["space"] == "w+" and first["latents"].shape == (1, 17, 16)
    np.testing.assert_array_equal(first["latents"], again["latents"])
    start = projection.initial_latents(g, "w+", 1, 0, 5)  # the average w
    decoded_start = np.clip(np.asarray(g.get_layer("synthesis")(start)), -1, 1)
    assert quality.ms_ssim_paired(first["images"], targets)[0] > quality.ms_ssim_paired(decoded_start, targets)[0] + 0.1
    assert set(projection.latent_prior_report(first["latents"], "w+", g)) >= {"distance_mean", "prior_distance_p99", "outside_p99"}


def test_ms_ssim_loss_is_zero_for_identical_images_and_grows_with_noise(blob_images):
    a = blob_images[:4]
    same = np.asarray(projection.ms_ssim_loss(a, a))
    noisy = np.asarray(projection.ms_ssim_loss(a, np.clip(a + 0.3 * np.random.RandomState(0).randn(*a.shape), -1, 1).astype(np.float32)))
    assert np.abs(same).max() < 1e-5 and (noisy > 0.05).all()


def test_walks_have_the_projections_as_endpoints():
    a, b = np.full((3, 4), 0.5, np.float32), np.ones((3, 4), np.float32)
    for mode in ("linear", "slerp"):
        path = projection.walk(a, b + 1, 5, mode)
        assert path.shape == (5, 3, 4)
        np.testing.assert_allclose(path[0], a, atol=1e-6)
        np.testing.assert_allclose(path[-1], b + 1, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        projection.walk(a, b, 1)


def test_progression_strip_ends_are_the_projections_of_the_inputs(tmp_path, blob_images):
    g = runs.load_release()
    result = projection.progression(g, blob_images[0], blob_images[1], steps=4, num_steps=10, starts=1, features=None)
    np.testing.assert_allclose(result["frames"][[0, -1]], result["projection"]["images"], atol=1e-5)
    assert projection.save_progression(result, tmp_path / "p.png") == tmp_path / "p.png"
    assert Image.open(tmp_path / "p.png").size[0] > 6 * 128  # real A, 4 frames, real B
    projection.save_progression(result, tmp_path / "p.gif")
    assert Image.open(tmp_path / "p.gif").size == (3 * 128, 128)  # real A | frame | real B


def _write_scans(folder, blob_images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, blob_images):
        sampling.save_png(image, folder / name)
    return [folder / n for n in names]


def test_project_and_progress_on_the_command_line(tmp_path, blob_images, capsys):
    run = loop.train(config.get_preset("smoke", epochs=1), tmp_path / "run", images=blob_images, verbose=False)
    scans = _write_scans(tmp_path / "scans", blob_images, ["a.png", "b.png"])
    argv = ["project", "--run", str(run), "--image", *map(str, scans), "--out", str(tmp_path / "out"), "--steps", "6", "--starts", "1"]
    assert cli.main(argv) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.png", "b.png", "latents.npz"}
    with np.load(tmp_path / "out" / "latents.npz") as z:
        assert list(z["stems"]) == ["a", "b"] and z["latents"].shape == (2, 100) and str(z["space"]) == "z"
    assert cli.main(["progress", "--run", str(run), "--from", str(scans[0]), "--to", str(scans[1]), "--steps", "3", "--project-steps", "6", "--out", str(tmp_path / "walk.gif")]) == 0
    assert (tmp_path / "walk.gif").is_file()
    capsys.readouterr()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    twins = _write_scans(tmp_path / "other", blob_images, ["a.png"])
    for argv, message in (
        (["project", "--run", str(run), "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "x")], "bad.png: cannot be read"),
        (["project", "--run", str(run), "--image", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x")], "no such image file"),
        (["project", "--run", str(run), "--image", str(scans[0]), str(twins[0]), "--out", str(tmp_path / "x")], "share a file name stem"),
        (["progress", "--run", str(run), "--from", str(scans[0]), "--to", str(scans[1]), "--out", str(tmp_path / "w.jpg")], "must end in .png or .gif"),
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not (tmp_path / "x").exists()  # nothing written on bad input
