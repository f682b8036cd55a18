"""The disease direction: fitted on projected real scans, it raises the COVID classifier's probability monotonically."""
import numpy as np
import pytest

from covgan_utils import direction, release, sample, train


def test_boundary_normal_separates_two_clouds():
    rng = np.random.RandomState(0)
    a, b = rng.randn(40, 5) + [2, 0, 0, 0, 0], rng.randn(40, 5) - [2, 0, 0, 0, 0]
    fit = direction.fit_boundary(np.concatenate([a, b]), np.r_[np.ones(40), np.zeros(40)])
    assert fit["accuracy"] > 0.95 and fit["normal"][0] > 0.9 and np.isclose(np.linalg.norm(fit["normal"]), 1.0)
    with pytest.raises(ValueError, match="both classes"):
        direction.fit_boundary(a, np.ones(40))


def test_monotonic_check_passes_rises_and_fails_shuffles_and_falls():
    rising = np.array([0.1, 0.2, 0.19, 0.4, 0.7])
    assert direction.rises_monotonically(rising)
    assert not direction.rises_monotonically(rising[[0, 3, 1, 4, 2]])
    assert not direction.rises_monotonically(rising[::-1])


def test_walking_a_non_covid_scan_towards_covid_raises_the_classifier_probability():
    g = release.load_release()
    cfg = sample.model_config(None)
    covid, non_covid = direction.training_scans(cfg, n=12)
    d = direction.fit_direction(g, covid, non_covid, num_steps=60, starts=1)
    assert d["space"] == "z" and d["normal"].shape == (100,) and d["accuracy"] > 0.8
    _, _, val, labels = train.training_split(cfg.replace(classes=("CT_COVID", "CT_NonCOVID")))
    scan = val[np.flatnonzero(labels == 1)[0]]  # an unseen non-COVID scan
    walk = direction.edit(g, scan, d, np.linspace(0.0, 6.0, 7), num_steps=60, starts=1)
    p = direction.covid_probability(walk["frames"])
    assert direction.rises_monotonically(p) and p[-1] - p[0] > 0.2, p
    assert not direction.rises_monotonically(p[np.random.RandomState(1).permutation(len(p))])  # a shuffled path fails
    back = direction.edit(g, scan, d, np.linspace(6.0, 0.0, 7), num_steps=60, starts=1)  # and back
    assert direction.rises_monotonically(direction.covid_probability(back["frames"])[::-1])


def test_edit_on_the_command_line_answers_bad_input_in_one_line(tmp_path, capsys):
    from covgan_utils import cli

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
