"""Domain encoder: a small conv net trained on the real CT scans, whose embedding is the feature
space for KID, FID and precision/recall/density/coverage.

Recipe (`DomainEncoderConfig`; `train_encoder`, also `python -m covgan_utils metrics train-encoder`):
- data: COVID + non-COVID scans with their lateral flips, the shared patient-level split
  `dataset.split_by_patient(patients, dataset.VAL_FRACTION, dataset.SPLIT_SEED)`; only the TRAIN side is
  used, the validation patients stay unseen (they are the held-out reference of the evaluation);
- network: five 3x3 stride-2 conv layers (16-32-64-128-128, LeakyReLU) -> global average pool ->
  128-d linear embedding (the features); two heads on the embedding, used only for training:
  a COVID-vs-non-COVID logit and a 64-d projection;
- loss: binary cross-entropy of the class logit on two augmented views of every image, plus the
  NT-Xent contrastive loss (Chen et al. 2020, SimCLR; temperature 0.2) between the projections of
  the two views, which asks for augmentation-invariant features of all training scans;
- augmentation: random crop (72-100% side) resized back to 128, contrast x[0.8, 1.2], brightness
  +-0.1, Gaussian noise 0.03;
- Adam 1e-3, batch 64 (full batches only: the contrastive negatives), 60 epochs, seeded
  (`keras.utils.set_random_seed`, plus op determinism under TensorFlow). Keras `fit` of a small
  training model written in keras.ops: it trains under TensorFlow or JAX.
Weights: models/domain_encoder/encoder.weights.h5 (+ config.json with this recipe under "recipe", the
split and the SHA-256 of the weights).
"""
import dataclasses
import hashlib
import importlib
import json
import pathlib
import time
import warnings

import numpy as np

from covgan_utils import checkpoints
from covgan_utils.config import SEED, WIDTH
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.metrics import roc
from covgan_utils.util import fields, files, paths

ENCODER_DIR = paths.MODELS_DIR / "domain_encoder"
WEIGHTS_NAME = "encoder.weights.h5"
CONFIG_NAME = "config.json"


F = fields.field
FIX = "fix it or retrain the encoder with `python -m covgan_utils metrics train-encoder`"


@fields.checked(frozen=True)
class EncoderSplit:
    """The scans the encoder trains on: `classes` (flipped too when `flip`), minus the validation patients."""

    classes: tuple = F(sources.CLASSES, fields.Items(fields.Choice(*sources.CLASSES), 1, len(sources.CLASSES), unique=True))
    flip: bool = F(True, fields.Bool())
    val_fraction: float = F(dataset.VAL_FRACTION, fields.Float(0.0, 1.0, lo_open=True, hi_open=True))
    split_seed: int = F(dataset.SPLIT_SEED, SEED)


@fields.checked(frozen=True)
class DomainEncoderConfig:
    """The domain encoder's recipe (see the module docstring); written under "recipe" in its config.json.
    Every field declares its type and range (`covgan_utils.util.fields`)."""

    LABEL = "domain encoder recipe"

    filters: tuple = F((16, 32, 64, 128, 128), fields.Items(WIDTH, 1, 7))  # stride-2 convolutions, 128 -> 1 at most
    embed_dim: int = F(128, fields.Int(1, 4096))
    projection_dim: int = F(64, fields.Int(1, 4096))
    temperature: float = F(0.2, fields.Float(0.0, 100.0, lo_open=True))
    epochs: int = F(60, fields.Int(1, 10**6))
    batch_size: int = F(64, fields.Int(2, 4096))  # contrastive: two or more images a batch
    learning_rate: float = F(1e-3, fields.Float(0.0, 1.0, lo_open=True))
    crop_min: float = F(0.72, fields.Float(0.0, 1.0, lo_open=True))
    contrast: tuple = F((0.8, 1.2), fields.Items(fields.Float(0.0, 10.0, lo_open=True), 2, 2))  # (low, high) factors
    brightness: float = F(0.1, fields.Float(0.0, 1.0))
    noise_std: float = F(0.03, fields.Float(0.0, 1.0))
    seed: int = F(0, SEED)
    split: EncoderSplit = F(default_factory=EncoderSplit, check=fields.Nested(EncoderSplit))

    def check_together(self):
        if self.contrast[0] > self.contrast[1]:
            raise ValueError(f"field 'contrast' must be (low, high) with low <= high, got {list(self.contrast)}")

    def replace(self, **changes):
        """Copy with some fields changed (unknown names, or values out of range, raise a one-line ValueError)."""
        return fields.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw, file):
        """Recipe from its JSON object (config.json's "recipe"). Fields it lacks take their defaults; an unknown
        field or a value of the wrong type or range raises a one-line ValueError naming `file` and the field."""
        return fields.from_json(cls, raw, file, where="recipe.", fix=FIX, what="domain encoder recipe fields")

    @classmethod
    def load(cls, folder=None):
        """Recipe of the encoder in `folder` (default models/domain_encoder/): its config.json's "recipe";
        the defaults when the folder has no config.json or the file no recipe."""
        file = pathlib.Path(folder or ENCODER_DIR) / CONFIG_NAME
        return cls.from_dict(_read_config(file).get("recipe", {}), file)


def _read_config(file):
    """config.json of an encoder folder as a dict ({} when there is none)."""
    if not pathlib.Path(file).is_file():
        return {}
    return files.read_json(file, "restore it from git or retrain the encoder with `python -m covgan_utils metrics train-encoder`")


def build(config=None):
    """(full model [emb, logit, proj], backbone images -> embedding) for a DomainEncoderConfig."""
    import keras
    from keras import layers

    config = config or DomainEncoderConfig()
    inp = keras.Input((decoding.IMAGE_SIZE, decoding.IMAGE_SIZE, 1))
    x = inp
    for f in config.filters:
        x = layers.Conv2D(f, 3, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    emb = layers.Dense(config.embed_dim, name="embedding")(layers.GlobalAveragePooling2D()(x))
    logit = layers.Dense(1, name="covid_logit")(emb)
    proj = layers.Dense(config.projection_dim, name="projection")(layers.Activation("relu")(emb))
    full = keras.Model(inp, [emb, logit, proj], name="domain_encoder")
    backbone = keras.Model(inp, emb, name="domain_encoder_backbone")
    return full, backbone


def sha256_of(file):
    return sources.sha256_of(file)


_LOADED = {}


def load_encoder(folder=None):
    """Backbone keras Model with the committed weights; checks them against config.json's SHA-256.
    Loaded once per process and folder."""
    folder = pathlib.Path(folder or ENCODER_DIR).resolve()
    key = (str(folder), (folder / WEIGHTS_NAME).stat().st_mtime_ns if (folder / WEIGHTS_NAME).is_file() else None)
    if key not in _LOADED:
        _LOADED[key] = _load(folder)
    return _LOADED[key]


def load_classifier(folder=None):
    """The encoder's COVID head as a classifier: images [N, 128, 128, 1] in [-1, 1] -> P(COVID) [N, 1].
    Trained with the encoder on the real scans of the train patients only (see the module docstring)."""
    import keras

    backbone = load_encoder(folder)
    full = backbone._covgan_full  # the model whose weights were loaded
    return keras.Model(full.inputs[0], keras.layers.Activation("sigmoid", name="p_covid")(full.outputs[1]), name="covid_classifier")


def _load(folder):
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"no domain encoder weights at {weights}; train them with `python -m covgan_utils metrics train-encoder`")
    expected = _read_config(folder / CONFIG_NAME).get("weights_sha256")
    full, backbone = build(DomainEncoderConfig.load(folder))
    full.load_weights(weights)
    if expected and expected != checkpoints.weights_digest(full):
        warnings.warn(f"{weights} does not match the SHA-256 recorded in {CONFIG_NAME}; features may differ from the documented ones", stacklevel=3)
    backbone._covgan_full = full  # load_classifier's COVID head
    return backbone


def embed(model, images, batch_size=256):
    """Images [N, 128, 128, 1] in [-1, 1] -> float32 features [N, embed_dim]."""
    images = np.asarray(images, np.float32)
    out = [np.asarray(model(images[s:s + batch_size], training=False)) for s in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def covid_logits(full, images, batch_size=256):
    """COVID logits [N] of the full model's class head for images [N, 128, 128, 1] in [-1, 1]."""
    images = np.asarray(images, np.float32)
    return np.concatenate([np.asarray(full(images[s:s + batch_size], training=False)[1])[:, 0] for s in range(0, len(images), batch_size)])


def augment(images, seed, config):
    """A random view of each image [N, H, W, 1]: crop (side crop_min..1) resized back, contrast, brightness, noise."""
    import keras
    from keras import ops

    n, size = ops.shape(images)[0], images.shape[1]
    side = keras.random.uniform((n, 1), config.crop_min, 1.0, seed=seed)  # [N, 1] crop side, fraction of the image
    y0 = keras.random.uniform((n, 1), seed=seed) * (1.0 - side)  # [N, 1] top edge
    x0 = keras.random.uniform((n, 1), seed=seed) * (1.0 - side)  # [N, 1] left edge
    zero = ops.zeros_like(side)
    # output pixel (x, y) reads input (side x + x0 (size - 1), side y + y0 (size - 1)): crop_and_resize's sampling
    transform = ops.concatenate([side, zero, x0 * (size - 1), zero, side, y0 * (size - 1), zero, zero], axis=1)  # [N, 8]
    out = ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="nearest")  # [N, H, W, 1]
    lo, hi = config.contrast
    out = out * keras.random.uniform((n, 1, 1, 1), lo, hi, seed=seed)
    out = out + keras.random.uniform((n, 1, 1, 1), -config.brightness, config.brightness, seed=seed)
    out = out + config.noise_std * keras.random.normal(ops.shape(out), seed=seed)
    return ops.clip(out, -1.0, 1.0)


def nt_xent(a, b, temperature):
    """NT-Xent (SimCLR) loss between projections a, b [N, d] of two views of the same N images."""
    import keras
    from keras import ops

    z = ops.concatenate([ops.normalize(a, axis=1), ops.normalize(b, axis=1)], axis=0)  # [2N, d], unit rows
    n = ops.shape(a)[0]
    sim = ops.matmul(z, ops.transpose(z)) / temperature - 1e9 * ops.eye(2 * n)  # [2N, 2N], no self-pairs
    targets = ops.concatenate([ops.arange(n, 2 * n), ops.arange(0, n)], axis=0)  # [2N] the other view
    return ops.mean(keras.losses.sparse_categorical_crossentropy(targets, sim, from_logits=True))


def _trainer(full, config):
    """The encoder's training model: two augmented views through `full`, the loss in `compute_loss` and its two
    terms as the step's logs, so that Keras' own train step runs it under TensorFlow or JAX (Keras is imported
    here: loading this module starts no backend)."""
    import keras
    from keras import ops

    class Trainer(keras.Model):
        def __init__(self):
            super().__init__(name="domain_encoder_trainer")
            self.full = full
            self.seed_generator = keras.random.SeedGenerator(config.seed)

        def call(self, images, training=False):
            _, l1, p1 = self.full(augment(images, self.seed_generator, config), training=training)
            _, l2, p2 = self.full(augment(images, self.seed_generator, config), training=training)
            return l1, l2, p1, p2  # logits [N, 1], projections [N, d]

        def terms(self, y, y_pred):
            l1, l2, p1, p2 = y_pred
            bce = [ops.mean(keras.losses.binary_crossentropy(y, logit, from_logits=True)) for logit in (l1, l2)]
            return 0.5 * (bce[0] + bce[1]), nt_xent(p1, p2, config.temperature)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return sum(self.terms(y, y_pred))

        def compute_metrics(self, x, y, y_pred, sample_weight=None):  # this step's terms, not running means
            cls, con = self.terms(y, y_pred)
            return {"class_loss": cls, "contrastive_loss": con}

    return Trainer()


def fit_encoder(images, labels, config=None, verbose=True):
    """Train a fresh encoder on `images` [N, 128, 128, 1] in [-1, 1] with `labels` [N] (1 = COVID) on the
    running Keras backend -> (full model, history: per epoch {"epoch", "class_loss", "contrastive_loss"})."""
    import keras

    config = config or DomainEncoderConfig()
    x, y = np.asarray(images, np.float32), np.asarray(labels, np.float32).reshape(-1, 1)
    bs = config.batch_size
    if len(x) < bs:
        raise ValueError(f"the domain encoder trains on full batches of {bs} images (contrastive negatives), got {len(x)} images; lower batch_size")
    keras.utils.set_random_seed(config.seed)
    full, _ = build(config)
    trainer = _trainer(full, config)
    trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    steps = len(x) // bs
    terms, history, started = [], [], time.time()

    def after_step(step, logs):  # epochs are counted here: one Keras epoch compiles the step once under JAX
        terms.append((float(logs["class_loss"]), float(logs["contrastive_loss"])))
        if len(terms) % steps == 0:
            cls, con = np.mean(terms[-steps:], axis=0)
            history.append({"epoch": len(history) + 1, "class_loss": round(float(cls), 4), "contrastive_loss": round(float(con), 4)})
            if verbose:
                print(f"epoch {len(history)}/{config.epochs}: class {cls:.4f}  contrastive {con:.4f}  ({time.time() - started:.0f} s)", flush=True)

    trainer.fit(_full_batches(x, y, bs, config.seed), steps_per_epoch=steps * config.epochs, epochs=1, verbose=0,
                callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=after_step)])
    return full, history


def _full_batches(x, y, batch_size, seed):
    """Endless (images, labels) batches: a fresh seeded permutation every epoch, full batches only (contrastive negatives)."""
    rng = np.random.RandomState(seed)
    while True:
        order = rng.permutation(len(x))
        for s in range(0, len(order) - batch_size + 1, batch_size):
            yield x[order[s:s + batch_size]], y[order[s:s + batch_size]]


def _deterministic():
    """Seeded runs give the same weights: op determinism under TensorFlow (JAX on CPU is deterministic)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def save_encoder(full, out_dir, config, extra=None):
    """Write the weights and config.json (digests, recipe, then `extra` and versions) -> out_dir."""
    import keras

    out_dir = pathlib.Path(out_dir or ENCODER_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_NAME
    full.save_weights(weights)
    backend = keras.backend.backend()
    record = {
        "description": "Domain encoder for KID/FID/PRDC features; see covgan_utils/metrics/domain_encoder.py for the recipe.",
        "weights": WEIGHTS_NAME,
        "weights_sha256": checkpoints.weights_digest(full),
        "file_sha256": sha256_of(weights),
        "recipe": config.to_dict(),
        **(extra or {}),
        "versions": {backend: importlib.import_module(backend).__version__, "keras": keras.__version__, "numpy": np.__version__},
    }
    files.write_text_atomic(out_dir / CONFIG_NAME, json.dumps(record, indent=2) + "\n")
    return out_dir


def train_encoder(path=None, out_dir=None, epochs=None, config=None, verbose=True):
    """Train the domain encoder on the train split only and write weights + config.json -> folder."""
    config = config or DomainEncoderConfig()
    if epochs is not None:
        config = config.replace(epochs=int(epochs))
    _deterministic()
    split = config.split
    ds = dataset.load_dataset(path, classes=tuple(split.classes), flip=split.flip)
    train_idx, val_idx = dataset.split_by_patient(ds.patients, split.val_fraction, split.split_seed)
    train, val = ds.subset(train_idx), ds.subset(val_idx)
    started = time.time()
    full, history = fit_encoder(train.images, train.classes == "CT_COVID", config, verbose)
    logits = covid_logits(full, val.images)
    val_labels = val.classes == "CT_COVID"
    extra = {
        "split": {
            "train_images": int(len(train)),
            "val_images": int(len(val)),
            "train_patients": int(len(np.unique(train.patients))),
            "val_patients": int(len(np.unique(val.patients))),
            "train_per_class": {c: int((train.classes == c).sum()) for c in split.classes},
            "val_per_class": {c: int((val.classes == c).sum()) for c in split.classes},
            "val_patients_sha256": hashlib.sha256("\n".join(sorted(np.unique(val.patients))).encode()).hexdigest(),
        },
        "validation": {"covid_accuracy": float(((logits > 0) == val_labels).mean()), "covid_auc": roc.auc(val_labels, logits)},
        "history": history,
        "train_seconds": round(time.time() - started, 1),
    }
    return save_encoder(full, out_dir, config, extra)
