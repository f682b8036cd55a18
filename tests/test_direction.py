"""The disease direction: fitted on projected real scans, it raises the COVID classifier's probability monotonically."""
import numpy as np
import pytest

from covgan_utils import checkpoints, cli, runs
from covgan_utils.data import dataset
from covgan_utils.inversion import direction, inversion_encoder, projection
from covgan_utils.util import paths


def test_boundary_normal_separates_two_clouds():
    rng = np.random.RandomState(0)
    a, b = rng.randn(40, 5) + [2, 0, 0, 0, 0], rng.randn(40, 5) - [2, 0, 0, 0, 0]
    fit = direction.fit_boundary(np.concatenate([a, b]), np.r_[np.ones(40), np.zeros(40)])
    assert fit["accuracy"] > 0.95 and fit["normal"][0] > 0.9 and np.isclose(np.linalg.norm(fit["normal"]), 1.0)
    with pytest.raises(ValueError, match="both classes"):
        direction.fit_boundary(a, np.ones(40))
    assert direction.cross_validated_accuracy(np.concatenate([a, b]), np.r_[np.ones(40), np.zeros(40)]) > 0.9


def test_cross_validation_sees_through_a_boundary_fitted_on_fewer_scans_than_dimensions():
    rng = np.random.RandomState(0)
    latents, labels = rng.randn(48, 100), np.r_[np.ones(24), np.zeros(24)]  # labels unrelated to the latents
    assert direction.fit_boundary(latents, labels)["accuracy"] == 1.0  # 48 points in 100-d: always separable
    assert direction.cross_validated_accuracy(latents, labels) < 0.75


def test_monotonic_check_passes_rises_and_fails_shuffles_and_falls():
    rising = np.array([0.1, 0.2, 0.19, 0.4, 0.7])
    assert direction.rises_monotonically(rising)
    assert not direction.rises_monotonically(rising[[0, 3, 1, 4, 2]])
    assert not direction.rises_monotonically(rising[::-1])


def test_walking_non_covid_scans_towards_covid_raises_the_classifier_probability():
    g = runs.load_release()
    cfg = runs.model_config(None)
    inverter = inversion_encoder.load(paths.RELEASE_DIR / inversion_encoder.FILE, checkpoints.weights_digest(g))
    assert inverter is not None, "the release ships the inversion encoder of its weights"
    covid, non_covid = direction.training_scans(cfg, n=None)  # every training scan of both classes, encoded
    d = direction.fit_direction(g, covid, non_covid, inverter=inverter)
    assert d["space"] == "z" and d["normal"].shape == (100,) and d["projection"] == "encoder"
    assert len(covid) + len(non_covid) > 900 and d["cv_accuracy"] > 0.7, d["cv_accuracy"]
    _, _, val, labels = dataset.training_split(cfg.replace(classes=("CT_COVID", "CT_NonCOVID")))
    scans = val[np.flatnonzero(labels == 1)[::6][:6]]  # six unseen non-COVID scans of different patients
    walks = [direction.edit(g, scan, d, np.linspace(0.0, 10.0, 6), num_steps=60, starts=1) for scan in scans]
    p = np.stack([direction.covid_probability(w["frames"]) for w in walks])  # [6 scans, 6 strengths]
    rise = p[:, -1] - p[:, 0]
    assert (rise > 0).sum() >= 4 and rise.mean() > 0.05, p  # a direction of the population, not of every scan
    best = p[np.argmax(rise)]
    assert direction.rises_monotonically(best) and best[-1] - best[0] > 0.2, p
    assert not direction.rises_monotonically(best[np.random.RandomState(1).permutation(len(best))])  # a shuffled path fails
    first = walks[int(np.argmax(rise))]
    decoded = projection.decoder(g, "z")(first["projection"]["latents"])  # strength 0 is the projection itself
    assert np.abs(np.clip(np.asarray(decoded), -1, 1) - first["frames"][:1]).max() < 1e-4


def test_edit_on_the_command_line_answers_bad_input_in_one_line(tmp_path, capsys):

    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    for argv, message in (
        (["edit", "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "e.png")], "bad.png: cannot be read"),
        (["edit", "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "e.png")], "no such image file"),
        (["edit", "--image", str(tmp_path / "bad.png"), "--out", str(tmp_path / "e.jpg")], "must end in .png or .gif"),
    ):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err
    assert not (tmp_path / "e.png").exists()
