import json

import numpy as np
import pytest

from covgan_utils import autoencoder as ae
from covgan_utils import data

from widget_fixtures import make_scans, smoke_run


def test_presets_and_widths():
    paper = ae.get_config("paper")
    assert paper.epochs == 100
    assert paper.widths == (512, 256, 128, 32, 2)  # five Dense layers down to a 2-D latent
    assert paper.classes == data.CLASSES  # both classes, not COVID only
    assert ae.get_config("smoke", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown autoencoder preset"):
        ae.get_config("huge")


def test_config_round_trip():
    config = ae.get_config("smoke", hidden=(8, 4), latent_dim=3)
    back = ae.AutoencoderConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert back == config


def test_model_is_dense_and_mirrored():
    config = ae.get_config("smoke", hidden=(64, 32, 16, 8))
    autoencoder, encoder, decoder = ae.build_autoencoder(config)
    enc = [l.units for l in encoder.layers if l.__class__.__name__ == "Dense"]
    dec = [l.units for l in decoder.layers if l.__class__.__name__ == "Dense"]
    assert enc == [64, 32, 16, 8, 2]
    assert dec == [8, 16, 32, 64, 128 * 128]
    x = np.random.uniform(-1, 1, (3, 128, 128, 1)).astype(np.float32)
    y = autoencoder.predict(x, verbose=0)
    assert y.shape == x.shape and np.all(np.abs(y) <= 1)


def test_mean_image_baseline():
    train = np.stack([np.full((4, 4, 1), v, np.float32) for v in (-1.0, 1.0)])
    assert ae.mean_image_mse(train, train) == pytest.approx(1.0)
    assert ae.mean_image_mse(train, np.zeros((1, 4, 4, 1), np.float32)) == pytest.approx(0.0)


def test_train_writes_run_folder(tmp_path):
    run = smoke_run(tmp_path, epochs=2)
    assert run.name == "00000-autoencoder"
    for name in ("config.json", "stats.jsonl", "metrics.json", ae.MODEL_FILE, ae.LATENTS_FILE):
        assert (run / name).is_file(), name
    lines = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines[:-1]] == [1, 2]
    final = lines[-1]
    assert final["final"] is True
    for key in ("mse_train", "mse_val", "mse255_train", "mse255_val", "baseline_mse255_train", "baseline_mse255_val"):
        assert np.isfinite(final[key]), key
    assert final["mse255_val"] == pytest.approx(final["mse_val"] * 127.5**2)
    latents = np.load(run / ae.LATENTS_FILE)
    assert latents["real_z"].shape == (32, 2)  # 2 classes x 4 patients x 4 slices, originals only
    assert set(latents["real_classes"]) == set(data.CLASSES)
    assert set(latents["real_split"]) == {"train", "val"}
    # validation patients never appear in training
    patients = latents["real_patients"]
    split = latents["real_split"]
    assert not set(patients[split == "train"]) & set(patients[split == "val"])


def test_run_resolution(tmp_path, monkeypatch):
    from covgan_utils import paths

    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path)
    assert ae.latest_gan_run() is None
    (tmp_path / "00000-quick").mkdir()
    (tmp_path / "00001-autoencoder").mkdir()
    (tmp_path / "00002-autoencoder-smoke").mkdir()
    assert ae.latest_gan_run().name == "00000-quick"
    with pytest.raises(FileNotFoundError, match="no trained autoencoder"):
        ae.resolve_autoencoder_run("latest")
    (tmp_path / "00002-autoencoder-smoke" / ae.MODEL_FILE).write_bytes(b"")
    assert ae.latest_autoencoder_run().name == "00002-autoencoder-smoke"
    (tmp_path / "00001-autoencoder" / ae.MODEL_FILE).write_bytes(b"")
    assert ae.latest_autoencoder_run().name == "00001-autoencoder"  # smoke runs only when nothing else
    assert ae.resolve_autoencoder_run("1").name == "00001-autoencoder"
    assert ae._next_run_dir(ae.run_suffix(ae.get_config("smoke"))).name == "00003-autoencoder-smoke"
    assert ae.run_suffix(ae.get_config("paper")) == "autoencoder"
