"""Run folders: one module finds, numbers and loads every kind of run; folders written before the package
was reorganised still load and give the same images.

tests/fixtures/before-layout was written by the flat-module code (commit 91e00f8): a `smoke` GAN run
trained one epoch with EMA (config.json + checkpoint-000001.npz), a `smoke` autoencoder run with
hidden=(8, 4) (config.json + autoencoder.keras), and expected.npz: that code's images of seeds 0 and 1
from the GAN run and from models/release, and its autoencoder latents of the GAN images."""
import json
import pathlib
import shutil
import threading

import numpy as np
import pytest

from covgan_utils import cli, runs, sampling
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder

BEFORE = pathlib.Path(__file__).parent / "fixtures" / "before-layout"
SEEDS = [0, 1]
SAME = 1e-4  # the same images up to float32 rounding (the fixtures were written under TensorFlow; JAX convolves in another order)


@pytest.fixture
def models(tmp_path, monkeypatch):
    """models/ holding the GAN run 00000-smoke and the autoencoder run 00001-autoencoder-smoke of the old layout."""
    root = tmp_path / "models"
    root.mkdir()
    for name in ("00000-smoke", "00001-autoencoder-smoke"):
        shutil.copytree(BEFORE / name, root / name)
    monkeypatch.setattr(paths, "MODELS_DIR", root)
    return root


@pytest.fixture(scope="module")
def expected():
    with np.load(BEFORE / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def test_the_release_gives_the_images_it_gave_before(expected):
    images = sampling.generate(runs.load_generator(), SEEDS)
    np.testing.assert_allclose(images, expected["release"], atol=SAME)


@pytest.mark.parametrize("designator", ["path", "0", "00000-smoke", "latest"])
def test_an_old_gan_run_loads_by_every_designator_and_gives_the_same_images(models, expected, designator):
    run = str(models / "00000-smoke") if designator == "path" else designator
    images = sampling.generate(runs.load_generator(run), SEEDS)
    np.testing.assert_allclose(images, expected["gan"], atol=SAME)
    assert runs.model_config(run).preset == "smoke"


@pytest.mark.parametrize("designator", ["1", "latest", "00001-autoencoder-smoke"])
def test_an_old_autoencoder_run_loads_and_encodes_the_same(models, expected, designator):
    config, encoder, _ = autoencoder.load_autoencoder(runs.resolve_run(designator, kind="autoencoder"))
    flat = expected["autoencoder_input"].reshape(len(SEEDS), -1) if len(encoder.inputs[0].shape) == 2 else expected["autoencoder_input"]
    np.testing.assert_allclose(np.asarray(encoder.predict(flat, verbose=0)), expected["autoencoder_latents"], atol=SAME)
    assert config.preset == "smoke"


def test_release_and_none_designate_the_released_model():
    assert runs.resolve_run(None) == runs.resolve_run("release") == paths.RELEASE_DIR
    assert runs.is_release(paths.RELEASE_DIR)


def test_a_run_of_the_other_kind_is_refused_with_one_line(models):
    with pytest.raises(ValueError, match="00001-autoencoder-smoke is an autoencoder run, not a gan run"):
        runs.resolve_run("1")
    with pytest.raises(ValueError, match="is a gan run, not an autoencoder run"):
        runs.resolve_run("0", kind="autoencoder")
    with pytest.raises(ValueError, match="no released autoencoder"):
        runs.resolve_run("release", kind="autoencoder")


def test_a_missing_run_names_what_was_looked_for(models):
    with pytest.raises(FileNotFoundError, match=r"run 7 does not exist .*run number or name in"):
        runs.resolve_run("7")


def test_latest_skips_run_folders_without_a_model(models):
    (models / "00002-quick").mkdir()  # a training that failed before its first checkpoint
    (models / "00002-quick" / "config.json").write_text((models / "00000-smoke" / "config.json").read_text())
    (models / "00003-autoencoder").mkdir()
    assert runs.latest_run() == models / "00000-smoke"
    assert runs.latest_run("autoencoder") == models / "00001-autoencoder-smoke"
    assert runs.latest_run(preset="quick") is None


def test_numbering_is_shared_by_every_kind_and_safe_when_runs_start_at_once(tmp_path):
    made = []
    threads = [threading.Thread(target=lambda i=i: made.append(runs.new_run_dir("autoencoder" if i % 2 else "smoke", tmp_path))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = sorted(int(p.name[:5]) for p in made)
    assert numbers == list(range(8)) and len({p.name for p in made}) == 8


@pytest.mark.parametrize("designator", ["0", "latest", "00000-smoke"])
def test_cli_flags_that_name_a_gan_run_take_every_designator(models, tmp_path, designator, capsys):
    out = tmp_path / "out"
    assert cli.main(["sample", "--run", designator, "--n", "2", "--out", str(out / "s")]) == 0
    assert sorted(p.name for p in (out / "s").glob("seed*.png")) == ["seed0.png", "seed1.png"]
    assert cli.main(["interpolate", "--run", designator, "--seed-a", "0", "--seed-b", "1", "--steps", "2", "--out", str(out / "i.png")]) == 0
    assert cli.main(["release", "--run", designator, "--out", str(out / "release")]) == 0
    released = sampling.generate(runs.load_generator(out / "release"), SEEDS)
    np.testing.assert_allclose(released, sampling.generate(runs.load_generator(designator), SEEDS), atol=1e-2)  # float16 weights
    assert json.loads((out / "release" / "source.json").read_text())["run"] == "00000-smoke"


def test_cli_run_errors_are_one_line(models, tmp_path, capsys):
    assert cli.main(["sample", "--run", "1", "--n", "2", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: run 00001-autoencoder-smoke is an autoencoder run") and "\n" not in err
