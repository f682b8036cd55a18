import json

import numpy as np
import pytest
from widget_fixtures import smoke_run

from covgan_utils import runs
from covgan_utils.data import sources
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder as autoencoder_lib


def test_presets_and_widths():
    paper = autoencoder_lib.get_config("paper")
    assert paper.epochs == 100
    assert paper.widths == (512, 256, 128, 32, 2)  # five Dense layers down to a 2-D latent
    assert paper.classes == sources.CLASSES  # both classes, not COVID only
    assert autoencoder_lib.get_config("smoke", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown autoencoder preset"):
        autoencoder_lib.get_config("huge")


def test_config_round_trip():
    config = autoencoder_lib.get_config("smoke", hidden=(8, 4), latent_dim=3)
    back = autoencoder_lib.AutoencoderConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert back == config


def test_model_is_dense_and_mirrored():
    config = autoencoder_lib.get_config("smoke", hidden=(64, 32, 16, 8))
    autoencoder, encoder, decoder = autoencoder_lib.build_autoencoder(config)
    enc = [l.units for l in encoder.layers if l.__class__.__name__ == "Dense"]
    dec = [l.units for l in decoder.layers if l.__class__.__name__ == "Dense"]
    assert enc == [64, 32, 16, 8, 2]
    assert dec == [8, 16, 32, 64, 128 * 128]
    x = np.random.uniform(-1, 1, (3, 128, 128, 1)).astype(np.float32)
    y = autoencoder.predict(x, verbose=0)
    assert y.shape == x.shape and np.all(np.abs(y) <= 1)


def test_mean_image_baseline():
    train = np.stack([np.full((4, 4, 1), v, np.float32) for v in (-1.0, 1.0)])
    assert autoencoder_lib.mean_image_mse(train, train) == pytest.approx(1.0)
    assert autoencoder_lib.mean_image_mse(train, np.zeros((1, 4, 4, 1), np.float32)) == pytest.approx(0.0)


def test_train_writes_run_folder(tmp_path):
    run = smoke_run(tmp_path, epochs=2)
    assert run.name == "00000-autoencoder"
    for name in ("config.json", "stats.jsonl", "metrics.json", autoencoder_lib.MODEL_FILE, autoencoder_lib.LATENTS_FILE):
        assert (run / name).is_file(), name
    lines = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines[:-1]] == [1, 2]
    final = lines[-1]
    assert final["final"] is True
    for key in ("mse_train", "mse_val", "mse255_train", "mse255_val", "baseline_mse255_train", "baseline_mse255_val"):
        assert np.isfinite(final[key]), key
    assert final["mse255_val"] == pytest.approx(final["mse_val"] * 127.5**2)
    latents = np.load(run / autoencoder_lib.LATENTS_FILE)
    assert latents["real_z"].shape == (32, 2)  # 2 classes x 4 patients x 4 slices, originals only
    assert set(latents["real_classes"]) == set(sources.CLASSES)
    assert set(latents["real_split"]) == {"train", "val"}
    # validation patients never appear in training
    patients = latents["real_patients"]
    split = latents["real_split"]
    assert not set(patients[split == "train"]) & set(patients[split == "val"])


def test_run_resolution(tmp_path, monkeypatch):

    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path)
    assert runs.latest_run() is None
    (tmp_path / "00000-quick").mkdir()
    (tmp_path / "00001-autoencoder").mkdir()
    (tmp_path / "00002-autoencoder-smoke").mkdir()
    assert runs.latest_run().name == "00000-quick"
    with pytest.raises(FileNotFoundError, match="no trained autoencoder"):
        runs.resolve_run("latest", kind="autoencoder")
    (tmp_path / "00002-autoencoder-smoke" / autoencoder_lib.MODEL_FILE).write_bytes(b"")
    assert runs.latest_run("autoencoder").name == "00002-autoencoder-smoke"
    (tmp_path / "00001-autoencoder" / autoencoder_lib.MODEL_FILE).write_bytes(b"")
    assert runs.latest_run("autoencoder").name == "00001-autoencoder"  # smoke runs only when nothing else
    assert runs.resolve_run("1", kind="autoencoder").name == "00001-autoencoder"
    assert runs._next_run_dir(autoencoder_lib.run_suffix(autoencoder_lib.get_config("smoke"))).name == "00003-autoencoder-smoke"
    assert autoencoder_lib.run_suffix(autoencoder_lib.get_config("paper")) == "autoencoder"
