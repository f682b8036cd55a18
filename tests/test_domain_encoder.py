"""The domain encoder: its recipe is a strict dataclass read back from config.json, the shipped encoder
still loads, and its training (Keras `fit`, keras.ops) learns on the running backend, TensorFlow or JAX."""
import dataclasses
import json
import warnings

import keras
import numpy as np
import pytest
from synthetic import blobs
from widget_fixtures import make_scans

from covgan_utils import checkpoints
from covgan_utils.data import dataset, sources
from covgan_utils.metrics import domain_encoder, roc
from covgan_utils.util import paths

TINY = domain_encoder.DomainEncoderConfig(filters=(8, 16), embed_dim=16, projection_dim=8, epochs=8, batch_size=8, learning_rate=1e-2)


def stripes(n, seed, size=128):
    """Sinusoidal gratings of random orientation, frequency and phase, [n, size, size, 1] in [-1, 1]."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle, freq, phase = rng.uniform(0, np.pi, (n, 1, 1)), rng.uniform(6, 12, (n, 1, 1)), rng.uniform(0, 2 * np.pi, (n, 1, 1))
    return np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)[..., None].astype(np.float32)


def two_kinds(n, seed):
    """n blob images (label 1) then n stripe images (label 0)."""
    return np.concatenate([blobs(n, seed), stripes(n, seed + 1)]), np.r_[np.ones(n), np.zeros(n)]


def test_the_default_recipe_is_the_shipped_encoders():
    shipped = json.loads((domain_encoder.ENCODER_DIR / domain_encoder.CONFIG_NAME).read_text())["recipe"]
    assert json.loads(domain_encoder.DomainEncoderConfig().to_json()) == shipped
    assert domain_encoder.DomainEncoderConfig.load() == domain_encoder.DomainEncoderConfig()
    split = domain_encoder.DomainEncoderConfig().split
    assert (split.val_fraction, split.split_seed, split.classes) == (dataset.VAL_FRACTION, dataset.SPLIT_SEED, sources.CLASSES)


def test_the_shipped_encoder_loads_with_its_recorded_digest():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        backbone = domain_encoder.load_encoder()
    assert not [w for w in seen if "SHA-256" in str(w.message)]  # a digest mismatch warns
    assert domain_encoder.load_encoder() is backbone  # loaded once per process and folder
    record = json.loads((domain_encoder.ENCODER_DIR / domain_encoder.CONFIG_NAME).read_text())
    assert checkpoints.weights_digest(backbone._covgan_full) == record["weights_sha256"]
    assert domain_encoder.embed(backbone, blobs(3, 0)).shape == (3, 128)


def test_recipe_round_trip_and_strict_loading(tmp_path):
    recipe = TINY.replace(contrast=(0.9, 1.1), split=domain_encoder.EncoderSplit(classes=("CT_COVID",), flip=False))
    (tmp_path / "config.json").write_text(json.dumps({"recipe": json.loads(recipe.to_json()), "weights_sha256": "x"}))
    loaded = domain_encoder.DomainEncoderConfig.load(tmp_path)
    assert loaded == recipe and isinstance(loaded.filters, tuple) and isinstance(loaded.split.classes, tuple)
    assert domain_encoder.DomainEncoderConfig.load(tmp_path / "none") == domain_encoder.DomainEncoderConfig()  # no config.json: defaults
    (tmp_path / "config.json").write_text(json.dumps({"recipe": {"epochs": 3}}))
    assert domain_encoder.DomainEncoderConfig.load(tmp_path) == domain_encoder.DomainEncoderConfig(epochs=3)  # missing fields: defaults
    bad = {
        "recipe.widths": {"widths": [8]},
        "recipe.split.patients": {"split": {"patients": 3}},
        "recipe.epochs": {"epochs": "many"},
        "recipe.contrast": {"contrast": 1.0},
    }
    for key, recipe_json in bad.items():
        (tmp_path / "config.json").write_text(json.dumps({"recipe": recipe_json}))
        with pytest.raises(ValueError) as err:
            domain_encoder.DomainEncoderConfig.load(tmp_path)
        message = str(err.value)
        assert str(tmp_path / "config.json") in message and key in message and "\n" not in message, message
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        domain_encoder.DomainEncoderConfig.load(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.epochs = 2
    with pytest.raises(ValueError, match="widths"):
        TINY.replace(widths=(8,))


def test_augmented_views_keep_shape_and_range_and_differ():
    images = blobs(4, 3)
    seed = keras.random.SeedGenerator(0)
    a, b = (np.asarray(domain_encoder.augment(images, seed, TINY)) for _ in range(2))
    assert a.shape == images.shape and a.min() >= -1.0 and a.max() <= 1.0
    assert not np.allclose(a, b) and not np.allclose(a, images)
    whole = TINY.replace(crop_min=1.0, contrast=(1.0, 1.0), brightness=0.0, noise_std=0.0)
    np.testing.assert_allclose(np.asarray(domain_encoder.augment(images, seed, whole)), images, atol=1e-5)  # a full-size crop: the image


def test_nt_xent_prefers_matching_views():
    rng = np.random.RandomState(0)
    a = rng.randn(8, 4).astype(np.float32)
    matched = float(domain_encoder.nt_xent(a, a + 0.01 * rng.randn(8, 4).astype(np.float32), 0.2))
    shuffled = float(domain_encoder.nt_xent(a, a[::-1].copy(), 0.2))
    assert np.isfinite(matched) and matched < shuffled


def test_training_learns_two_kinds_of_blobs(tmp_path):
    x, y = two_kinds(16, seed=1)
    full, history = domain_encoder.fit_encoder(x, y, TINY, verbose=False)
    assert [h["epoch"] for h in history] == list(range(1, TINY.epochs + 1))
    losses = np.array([[h["class_loss"], h["contrastive_loss"]] for h in history])
    assert np.isfinite(losses).all()
    assert losses[-1, 0] < 0.8 * losses[0, 0] and losses[-1].sum() < losses[0].sum()
    fresh, fresh_y = two_kinds(12, seed=21)  # images the encoder has not seen
    assert roc.auc(fresh_y, domain_encoder.covid_logits(full, fresh)) > 0.9
    out = domain_encoder.save_encoder(full, tmp_path / "enc", TINY, {"history": history})
    record = json.loads((out / "config.json").read_text())
    assert record["versions"][keras.backend.backend()] and record["history"] == history
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        backbone = domain_encoder.load_encoder(out)
    assert not [w for w in seen if "SHA-256" in str(w.message)]
    assert domain_encoder.DomainEncoderConfig.load(out) == TINY
    np.testing.assert_allclose(domain_encoder.embed(backbone, fresh), np.asarray(full(fresh)[0]), rtol=1e-5, atol=1e-5)
    p_covid = np.asarray(domain_encoder.load_classifier(out)(fresh))[:, 0]
    assert roc.auc(fresh_y, p_covid) > 0.9


def test_train_encoder_writes_a_loadable_encoder_from_a_scan_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    monkeypatch.setattr(domain_encoder, "_deterministic", lambda: None)  # process-wide TF op determinism stays off in tests
    scans = make_scans(tmp_path / "scans", n_patients=5, slices=2)
    out = domain_encoder.train_encoder(scans, tmp_path / "enc", epochs=1, config=TINY, verbose=False)
    record = json.loads((out / "config.json").read_text())
    split = record["split"]
    assert record["recipe"]["epochs"] == 1 and len(record["history"]) == 1
    assert split["train_patients"] + split["val_patients"] == 10 and split["val_images"] > 0
    assert split["train_images"] + split["val_images"] == 40  # 10 patients x 2 slices x 2 (flips)
    assert 0.0 <= record["validation"]["covid_auc"] <= 1.0
    assert checkpoints.weights_digest(domain_encoder.load_encoder(out)._covgan_full) == record["weights_sha256"]
