import json
import threading

import numpy as np
import pytest
from widget_fixtures import make_scans, smoke_config, smoke_run

from covgan_utils import runs
from covgan_utils.data import dataset, sources
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
    with pytest.raises(ValueError, match=r"unknown autoencoder config field\(s\) \['epoch'\]"):
        autoencoder_lib.get_config("smoke", epoch=3)


def test_split_is_the_projects():
    config = autoencoder_lib.AutoencoderConfig()
    assert (config.val_fraction, config.split_seed) == (dataset.VAL_FRACTION, dataset.SPLIT_SEED)


def test_config_round_trip(tmp_path):
    config = autoencoder_lib.get_config("smoke", hidden=(8, 4), latent_dim=3, data_path="somewhere")
    back = autoencoder_lib.AutoencoderConfig.from_json(json.loads(json.dumps(config.to_json())))
    assert back == config
    config.save(tmp_path)
    assert autoencoder_lib.AutoencoderConfig.load(tmp_path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # written atomically: no temporary file left


@pytest.mark.parametrize("change, message", [
    ({"hiden": [8, 4]}, "unknown autoencoder config field 'hiden'"),
    ({"widths": [8, 2]}, "unknown autoencoder config field 'widths'"),
    ({"epochs": "many"}, "field 'epochs' must be a whole number"),
    ({"hidden": [8, "wide"]}, "field 'hidden' must be a list of 1 to 8 values, each a whole number"),
    ({"gan_run": 3}, "field 'gan_run' must be a string of at most 4096 characters or null"),
    ({"classes": ["CT_Other"]}, "field 'classes' must be a list of 1 to 2 distinct values, each one of CT_COVID, CT_NonCOVID, got \\[\"CT_Other\"\\]"),
])
def test_config_file_is_strict(tmp_path, change, message):
    blob = {**autoencoder_lib.get_config("smoke").to_json(), **change}
    (tmp_path / "config.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError, match=message) as err:
        autoencoder_lib.AutoencoderConfig.load(tmp_path)
    assert str(err.value).startswith(str(tmp_path / "config.json")) and "\n" not in str(err.value)


def test_config_written_before_split_seed_keeps_its_split(tmp_path):
    blob = autoencoder_lib.get_config("smoke").to_json()
    del blob["split_seed"]
    blob["seed"] = 3
    (tmp_path / "config.json").write_text(json.dumps(blob))
    assert autoencoder_lib.AutoencoderConfig.load(tmp_path).split_seed == 3  # such runs split by their seed


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
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert autoencoder_lib.AutoencoderConfig.load(run) == smoke_config(tmp_path / "scans", epochs=2)
    lines = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines[:-1]] == [1, 2]
    assert all(l["seconds"] > 0 for l in lines[:-1])  # each epoch's duration
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
    # and they are the patients the project's split holds out (the GAN's, the metrics')
    _, val = dataset.load_split(tmp_path / "scans", classes=sources.CLASSES, flip=False)
    assert sorted(latents["real_files"][split == "val"]) == sorted(val.files)


def test_run_resolution(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path)
    assert runs.latest_run() is None
    (tmp_path / "00000-quick").mkdir()
    (tmp_path / "00001-autoencoder").mkdir()
    (tmp_path / "00002-autoencoder-smoke").mkdir()
    assert runs.latest_run() is None  # a GAN run counts once it holds a checkpoint
    (tmp_path / "00000-quick" / "checkpoint-000001.npz").write_bytes(b"")
    assert runs.latest_run().name == "00000-quick"
    with pytest.raises(FileNotFoundError, match="no autoencoder run with a model"):
        runs.resolve_run("latest", kind="autoencoder")
    (tmp_path / "00002-autoencoder-smoke" / autoencoder_lib.MODEL_FILE).write_bytes(b"")
    assert runs.latest_run("autoencoder").name == "00002-autoencoder-smoke"
    (tmp_path / "00001-autoencoder" / autoencoder_lib.MODEL_FILE).write_bytes(b"")
    assert runs.latest_run("autoencoder").name == "00001-autoencoder"  # smoke runs only when nothing else
    assert runs.resolve_run("1", kind="autoencoder").name == "00001-autoencoder"
    assert runs.new_run_dir(autoencoder_lib.run_suffix(autoencoder_lib.get_config("smoke"))).name == "00003-autoencoder-smoke"
    assert autoencoder_lib.run_suffix(autoencoder_lib.get_config("paper")) == "autoencoder"


def test_trainings_started_at_once_get_distinct_run_folders(tmp_path, monkeypatch):
    models = tmp_path / "models"
    monkeypatch.setattr(paths, "MODELS_DIR", models)
    config = smoke_config(make_scans(tmp_path / "scans"), epochs=1)
    autoencoder_lib.load_training_data(config)  # the data cache is written once here; both trainings only read it
    autoencoder_lib.load_real_images(config)

    both_numbering = threading.Barrier(2, timeout=60)
    numbering = runs.new_run_dir

    def new_run_dir(name, root=None):  # both trainings ask for a number at the same moment
        both_numbering.wait()
        return numbering(name, root)

    monkeypatch.setattr(runs, "new_run_dir", new_run_dir)
    done, errors = [], []

    def train():
        try:
            done.append(autoencoder_lib.train_autoencoder(config, verbose=0))
        except Exception as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert sorted(p.name for p in done) == ["00000-autoencoder-smoke", "00001-autoencoder-smoke"]
    for run in done:
        assert json.loads((run / "stats.jsonl").read_text().splitlines()[-1])["final"] is True
        assert (run / autoencoder_lib.MODEL_FILE).is_file() and (run / autoencoder_lib.LATENTS_FILE).is_file()
