"""Dense autoencoder behind the latent-space widget: 128x128 scan -> 2-D latent point -> 128x128 scan.

The encoder is a stack of Dense layers (default 16384 -> 512 -> 256 -> 128 -> 32 -> 2, five Dense layers),
the decoder its mirror image (2 -> 32 -> 128 -> 256 -> 512 -> 16384, tanh). It is trained with MSE on
[-1, 1] images of both classes (COVID and non-COVID) with a patient-level validation split, and the
reconstruction error is reported on [-1, 1] and on the 0-255 scale, next to the error of predicting the
mean training image.

A run lives in `models/<NNNNN>-autoencoder/` (`-autoencoder-<preset>` for other presets than paper): config.json, stats.jsonl (one line per epoch, then a
final line with the metrics), metrics.json, autoencoder.keras and latents.npz (latent coordinates of
every real scan, and of generated scans when a GAN run is given).
"""
import dataclasses
import json
import os
import pathlib
import time
import zipfile

import numpy as np

from covgan_utils import config as config_lib
from covgan_utils import runs, sampling
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.util import fields, files

RUN_SUFFIX = runs.AUTOENCODER_SUFFIX


MODEL_FILE = runs.AUTOENCODER_MODEL


LATENTS_FILE = "latents.npz"


SCALE_255 = 127.5**2  # MSE on [-1, 1] -> MSE on the 0-255 scale


F = fields.field
SEED = config_lib.SEED


@fields.checked
class AutoencoderConfig:
    """Everything that defines an autoencoder run; written to `config.json` in its run folder. Every field
    declares its type and range (`covgan_utils.util.fields`)."""

    LABEL = "autoencoder config"

    preset: str = F("paper", fields.Text(100))
    hidden: tuple = F((512, 256, 128, 32), fields.Items(config_lib.WIDTH, 1, 8))  # encoder widths before the latent layer; the decoder mirrors them
    latent_dim: int = F(2, fields.Int(1, 1024))
    epochs: int = F(100, fields.Int(1, 10**6))
    batch_size: int = F(32, fields.Int(1, 4096))
    learning_rate: float = F(1e-3, fields.Float(0.0, 1.0, lo_open=True))
    classes: tuple = F(sources.CLASSES, fields.Items(fields.Choice(*sources.CLASSES), 1, len(sources.CLASSES), unique=True))  # both classes: the map shows COVID and non-COVID scans
    flip: bool = F(True, fields.Bool())  # train on the lateral-flip copies too (the map shows the originals only)
    val_fraction: float = F(dataset.VAL_FRACTION, fields.Float(0.0, 1.0, lo_open=True, hi_open=True))  # the project's patient split, as the GAN's
    split_seed: int = F(dataset.SPLIT_SEED, SEED)
    seed: int = F(0, SEED)  # initial weights, shuffling and the max_train subsample
    max_train: int = F(0, fields.Int(0, 10**7, off=True))  # 0 = all; smoke runs cap the number of training/validation images
    data_path: str = F(None, fields.Text(4096, optional=True))  # None = the usual data search (see sources.find_data_dir)
    gan_run: str = F(None, fields.Text(4096, optional=True))  # GAN run whose samples are encoded too: a run designator (`covgan_utils.runs`) or None
    n_generated: int = F(256, fields.Int(0, 10**5))

    @property
    def widths(self):
        """Widths of the five encoder Dense layers, latent included."""
        return tuple(self.hidden) + (self.latent_dim,)

    def replace(self, **changes):
        """Copy with some fields changed (unknown names, or values out of range, raise a one-line ValueError)."""
        return fields.replace(self, **changes)

    def to_json(self):
        return {**dataclasses.asdict(self), "hidden": list(self.hidden), "classes": list(self.classes)}

    def save(self, run_dir):
        """Write `<run_dir>/config.json` atomically."""
        files.write_text_atomic(pathlib.Path(run_dir) / "config.json", json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def from_json(cls, blob, source="config.json"):
        """Config from a parsed config.json: missing fields take their defaults; an unknown field or a value
        of the wrong type or range raises a one-line ValueError naming `source`, the field and its range."""
        if isinstance(blob, dict) and "split_seed" not in blob:  # written before split_seed existed: the split followed `seed`
            blob = {**blob, "split_seed": blob.get("seed", cls.seed)}
        return fields.from_json(cls, blob, source, fix="fix it or restore the file", what="autoencoder config fields",
                                hint=" (is it an autoencoder run folder?)")

    @classmethod
    def load(cls, run_dir):
        """Config from `<run_dir>/config.json` (`from_json`); a missing or unreadable file raises a one-line error."""
        file = pathlib.Path(run_dir) / "config.json"
        retrain = "retrain it with `python -m covgan_utils widget train`"
        if not file.is_file():
            raise FileNotFoundError(f"no config.json in {run_dir}: is it an autoencoder run folder? {retrain}")
        try:
            blob = json.loads(file.read_bytes().decode("utf-8"))
        except ValueError as err:  # not UTF-8, not JSON
            raise ValueError(f"{file}: not a valid autoencoder config (not JSON: {' '.join(str(err).split())}); restore it or {retrain}") from None
        return cls.from_json(blob, source=file)


PRESETS = {
    "paper": {},  # 100 epochs, as in the paper's appendix
    "quick": {"epochs": 20},
    "smoke": {"hidden": (32, 16, 8, 4), "epochs": 2, "batch_size": 16, "max_train": 96, "n_generated": 16},
}


def get_config(preset="paper", **overrides):
    """AutoencoderConfig for a preset name, with field overrides (None values are ignored)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown autoencoder preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = {"preset": preset, **PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return AutoencoderConfig().replace(**values)


# ---------------------------------------------------------------- model

def build_autoencoder(config):
    """(autoencoder, encoder, decoder) Keras models; images [N, 128, 128, 1] in [-1, 1]."""
    import keras
    from keras import layers

    size = decoding.IMAGE_SIZE
    image = keras.Input((size, size, 1), name="image")
    x = layers.Flatten(name="flatten")(image)
    for i, width in enumerate(config.hidden):
        x = layers.Dense(width, activation="relu", name=f"enc_dense{i + 1}")(x)
    z = layers.Dense(config.latent_dim, name="latent")(x)
    encoder = keras.Model(image, z, name="encoder")

    latent = keras.Input((config.latent_dim,), name="z")
    y = latent
    for i, width in enumerate(reversed(config.hidden)):
        y = layers.Dense(width, activation="relu", name=f"dec_dense{i + 1}")(y)
    # tanh after the reshape: a Dense(tanh) becomes a fused MatMul+Tanh in the exported graph, which the
    # TF.js CPU backend cannot run
    y = layers.Dense(size * size, name="pixels")(y)
    y = layers.Reshape((size, size, 1), name="reshape")(y)
    out = layers.Activation("tanh", name="image_out")(y)
    decoder = keras.Model(latent, out, name="decoder")

    autoencoder = keras.Model(image, decoder(encoder(image)), name="autoencoder")
    return autoencoder, encoder, decoder


def load_autoencoder(run_dir):
    """(config, encoder, decoder) of a saved autoencoder run."""
    import keras

    run_dir = pathlib.Path(run_dir)
    model_file = run_dir / MODEL_FILE
    if not model_file.is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in {run_dir}: train one with `python -m covgan_utils widget train`")
    retrain = "retrain it with `python -m covgan_utils widget train`"
    config = AutoencoderConfig.load(run_dir)
    if not zipfile.is_zipfile(model_file):
        raise ValueError(f"{model_file}: refused (not a .keras zip archive: damaged or truncated); {retrain}")
    try:
        model = keras.models.load_model(model_file, compile=False, safe_mode=True)  # never deserialises code
        return config, model.get_layer("encoder"), model.get_layer("decoder")
    except Exception as err:  # noqa: BLE001  (Keras raises ValueError, TypeError, KeyError, OSError, ... on a bad file)
        if "Lambda" in str(err) or "unsafe" in str(err).lower():
            reason = "it holds a Lambda layer or other Python code, which Keras safe_mode never loads"
        else:
            reason = f"not a loadable Keras model: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        raise ValueError(f"{model_file}: refused ({reason}); {retrain}") from None


def run_suffix(config):
    """Run-folder suffix: "autoencoder" for the paper preset, "autoencoder-<preset>" otherwise."""
    return RUN_SUFFIX if config.preset == "paper" else f"{RUN_SUFFIX}-{config.preset}"


# ---------------------------------------------------------------- data

def split_dataset(config, flip):
    """(Dataset of `config.classes`, train indices, val indices): the project's patient-level split, drawn over
    the patients of both classes (as `dataset.load_split`), so every model holds out the same patients."""
    ds = dataset.load_dataset(config.data_path, classes=sources.CLASSES, flip=flip)
    _, val_idx = dataset.split_by_patient(ds.patients, config.val_fraction, config.split_seed)
    is_val = np.zeros(len(ds), bool)
    is_val[val_idx] = True
    keep = np.isin(ds.classes, config.classes)
    return ds.subset(keep), np.flatnonzero(~is_val[keep]), np.flatnonzero(is_val[keep])


def load_training_data(config):
    """(train, val, val patients): the patient-level split of `config.classes` (+flips); smoke runs subsample it."""
    ds, train_idx, val_idx = split_dataset(config, config.flip)
    if config.max_train:
        rng = np.random.RandomState(config.seed)
        train_idx = np.sort(rng.permutation(train_idx)[: config.max_train])
        val_idx = np.sort(rng.permutation(val_idx)[: max(1, config.max_train // 4)])
    val_patients = set(ds.patients[val_idx])
    return ds.subset(train_idx), ds.subset(val_idx), val_patients


def load_real_images(config):
    """(the original, unflipped scans of `config.classes`, their side of the split: "train"/"val" per scan)."""
    ds, _, val_idx = split_dataset(config, flip=False)
    split = np.full(len(ds), "train", dtype="<U5")
    split[val_idx] = "val"
    return ds, split


# ---------------------------------------------------------------- metrics

def reconstruction_mse(autoencoder, images, batch_size=64):
    """Mean squared error of the reconstructions, on [-1, 1]."""
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        recon = autoencoder.predict_on_batch(batch)
        total += float(np.sum((np.asarray(recon, np.float64) - batch) ** 2))
        count += batch.size
    return total / max(count, 1)


def mean_image_mse(train_images, images):
    """MSE on [-1, 1] of the trivial baseline that always predicts the mean training image."""
    mean = train_images.astype(np.float64).mean(axis=0, keepdims=True)
    return float(np.mean((images.astype(np.float64) - mean) ** 2))


def _metrics_record(mse_train, mse_val, base_train, base_val):
    return {
        "mse_train": mse_train,
        "mse_val": mse_val,
        "mse255_train": mse_train * SCALE_255,
        "mse255_val": mse_val * SCALE_255,
        "baseline_mse_train": base_train,
        "baseline_mse_val": base_val,
        "baseline_mse255_train": base_train * SCALE_255,
        "baseline_mse255_val": base_val * SCALE_255,
    }


# ---------------------------------------------------------------- training

def train_autoencoder(config=None, run_dir=None, verbose=1):
    """Train the autoencoder, write its run folder, encode the latent map; returns the run folder."""
    import keras

    config = config or get_config("paper")
    gan = resolve_gan(config.gan_run, verbose)  # a bad designator fails before any training
    run_dir = pathlib.Path(run_dir) if run_dir else runs.new_run_dir(run_suffix(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir)

    train, val, _ = load_training_data(config)
    if verbose:
        print(f"autoencoder {config.preset}: {len(train)} training / {len(val)} validation images, widths {config.widths}, {config.epochs} epochs -> {run_dir}")
    keras.utils.set_random_seed(config.seed)
    autoencoder, _, _ = build_autoencoder(config)
    autoencoder.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss="mse")

    stats_file = run_dir / "stats.jsonl"
    stats_file.write_text("")

    class _Log(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            line = {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), "val_loss": float(logs.get("val_loss", np.nan)), "seconds": round(time.perf_counter() - self.t0, 3)}
            with open(stats_file, "a") as fh:
                fh.write(json.dumps(line) + "\n")

    t0 = time.perf_counter()
    history = autoencoder.fit(
        train.images, train.images,
        validation_data=(val.images, val.images),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True,
        callbacks=[_Log()], verbose=2 if verbose else 0,
    )
    train_sec = time.perf_counter() - t0
    autoencoder.save(run_dir / MODEL_FILE)

    metrics = _metrics_record(
        reconstruction_mse(autoencoder, train.images), reconstruction_mse(autoencoder, val.images),
        mean_image_mse(train.images, train.images), mean_image_mse(train.images, val.images),
    )
    val_curve = history.history.get("val_loss", [])
    if val_curve:  # the 2-D bottleneck overfits: keep where validation error bottomed out
        best = int(np.argmin(val_curve))
        metrics.update(best_val_epoch=best + 1, best_mse_val=float(val_curve[best]), best_mse255_val=float(val_curve[best]) * SCALE_255)
    metrics.update(epochs=config.epochs, train_sec=round(train_sec, 1), n_train=len(train), n_val=len(val), cpu_count=os.cpu_count())
    with open(stats_file, "a") as fh:
        fh.write(json.dumps({"final": True, **metrics}) + "\n")
    files.write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if verbose:
        print(format_metrics(metrics))

    encode_latents(run_dir, run_dir / LATENTS_FILE, gan=gan, n_generated=config.n_generated, verbose=verbose)
    return run_dir


def format_metrics(m):
    return (
        f"reconstruction MSE [-1,1]: train {m['mse_train']:.4f}, val {m['mse_val']:.4f} | "
        f"0-255 scale: train {m['mse255_train']:.1f}, val {m['mse255_val']:.1f} | "
        f"mean-image baseline (0-255): train {m['baseline_mse255_train']:.1f}, val {m['baseline_mse255_val']:.1f}"
    )


# ---------------------------------------------------------------- latent map

def run_label(folder):
    """How a GAN run is named in outputs: `release`, or its folder's name."""
    return runs.RELEASE if runs.is_release(folder) else pathlib.Path(folder).name


def resolve_gan(gan, verbose=1):
    """A GAN argument -> an array of images, a GAN run folder (`runs.resolve_run`) or None (no generated scans).
    `latest` with no GAN run yet gives None with a note."""
    if gan is None or isinstance(gan, np.ndarray):
        return gan
    if str(gan) == runs.LATEST and runs.latest_run() is None:
        if verbose:
            print("note: no GAN run found, the map shows real scans only")
        return None
    return runs.resolve_run(gan, kind="gan")


def generated_images(gan, n=256, seed=0):
    """Samples of a GAN [n, 128, 128, 1] in [-1, 1]: `gan` is an array of images (returned as is), a GAN run
    designator or folder, or None (returns None)."""
    gan = resolve_gan(gan, verbose=0)
    if gan is None:
        return None
    if isinstance(gan, np.ndarray):
        return gan.astype(np.float32)
    generator = runs.load_generator(gan)
    return np.asarray(sampling.generate(generator, list(range(seed, seed + n))), np.float32)


def encode(encoder, images, latent_dim=2):
    """Latent points [N, latent_dim] of images [N, 128, 128, 1] (none for an empty or missing array)."""
    if images is None or not len(images):
        return np.zeros((0, latent_dim), np.float32)
    return np.asarray(encoder.predict(images, batch_size=128, verbose=0), np.float32)  # [N, latent_dim]


def latent_arrays(real, split, real_z, generated_z, gan_run=""):
    """The arrays of a latents.npz: real scans' points and metadata, generated scans' points, the GAN's name."""
    return {"real_z": real_z, "real_files": real.files, "real_classes": real.classes, "real_patients": real.patients,
            "real_split": split, "generated_z": generated_z, "gan_run": np.array(gan_run)}


def save_latents(out, arrays):
    """Write latents.npz (arrays of `latent_arrays`) atomically; returns its path."""
    return files.write_atomic(out, lambda fh: np.savez(fh, **arrays))


def encode_latents(run_dir, out, gan=None, n_generated=256, verbose=1):
    """Encode every real scan (and `gan`'s samples) with an autoencoder run's encoder into `out` (a latents.npz);
    returns its path. `train_autoencoder` writes its own run folder's; exports write theirs."""
    config, encoder, _ = load_autoencoder(run_dir)
    real, split = load_real_images(config)
    gan = resolve_gan(gan, verbose)
    real_z = encode(encoder, real.images, config.latent_dim)
    fake_z = encode(encoder, generated_images(gan, n_generated), config.latent_dim)
    label = "" if gan is None or isinstance(gan, np.ndarray) else run_label(gan)
    out = save_latents(out, latent_arrays(real, split, real_z, fake_z, label))
    if verbose:
        print(f"encoded {len(real_z)} real and {len(fake_z)} generated scans -> {out}")
    return out
