"""Domain encoder: a small conv net trained on the real CT scans, whose embedding is the feature
space for KID, FID and precision/recall/density/coverage.

Recipe (`train_encoder`, also `python -m covgan_utils metrics train-encoder`):
- data: COVID + non-COVID scans with their lateral flips, patient-level split
  `dataset.split_by_patient(patients, val_fraction=0.2, seed=0)`; only the TRAIN side is used, the
  validation patients stay unseen (they are the held-out reference of the evaluation);
- network: five 3x3 stride-2 conv layers (16-32-64-128-128, LeakyReLU) -> global average pool ->
  128-d linear embedding (the features); two heads on the embedding, used only for training:
  a COVID-vs-non-COVID logit and a 64-d projection;
- loss: binary cross-entropy of the class logit on two augmented views of every image, plus the
  NT-Xent contrastive loss (Chen et al. 2020, SimCLR; temperature 0.2) between the projections of
  the two views, which asks for augmentation-invariant features of all training scans;
- augmentation: random crop (72-100% side) resized back to 128, contrast x[0.8, 1.2], brightness
  +-0.1, Gaussian noise 0.03;
- Adam 1e-3, batch 64, 60 epochs, seeded (`keras.utils.set_random_seed` and TF op determinism).
Weights: models/domain_encoder/encoder.weights.h5 (+ config.json with this recipe, the split and the
SHA-256 of the weights file).
"""
import hashlib
import json
import pathlib
import time
import warnings

import numpy as np

from covgan_utils.data import dataset, decoding, sources
from covgan_utils.util import paths

ENCODER_DIR = paths.MODELS_DIR / "domain_encoder"
WEIGHTS_NAME = "encoder.weights.h5"
RECIPE = {
    "filters": [16, 32, 64, 128, 128],
    "embed_dim": 128,
    "projection_dim": 64,
    "temperature": 0.2,
    "epochs": 60,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "crop_min": 0.72,
    "contrast": [0.8, 1.2],
    "brightness": 0.1,
    "noise_std": 0.03,
    "seed": 0,
    "split": {"classes": list(sources.CLASSES), "flip": True, "val_fraction": 0.2, "split_seed": 0},
}


def build(recipe=RECIPE):
    """(full model [emb, logit, proj], backbone images -> embedding)."""
    import keras
    from keras import layers

    inp = keras.Input((decoding.IMAGE_SIZE, decoding.IMAGE_SIZE, 1))
    x = inp
    for f in recipe["filters"]:
        x = layers.Conv2D(f, 3, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    emb = layers.Dense(recipe["embed_dim"], name="embedding")(layers.GlobalAveragePooling2D()(x))
    logit = layers.Dense(1, name="covid_logit")(emb)
    proj = layers.Dense(recipe["projection_dim"], name="projection")(layers.Activation("relu")(emb))
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
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    full, backbone = build({**RECIPE, **config.get("recipe", {})})
    full.load_weights(weights)
    expected = config.get("weights_sha256")
    if expected and expected != weights_digest(full):
        warnings.warn(f"{weights} does not match the SHA-256 recorded in config.json; features may differ from the documented ones", stacklevel=3)
    backbone._covgan_full = full  # load_classifier's COVID head
    return backbone


def weights_digest(model):
    """SHA-256 of the weight values (float32 little-endian, with shapes, in layer order).

    Unlike the .h5 file's own digest (HDF5 stores write times), it is the same for every
    reproduction of the training run."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w, dtype="<f4")
        digest.update(str(w.shape).encode())
        digest.update(w.tobytes())
    return digest.hexdigest()


def embed(model, images, batch_size=256):
    """Images [N, 128, 128, 1] in [-1, 1] -> float32 features [N, embed_dim]."""
    images = np.asarray(images, np.float32)
    out = [np.asarray(model(images[s:s + batch_size], training=False)) for s in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _augment(tf, images, rng, recipe):
    n = tf.shape(images)[0]
    side = rng.uniform([n, 1], recipe["crop_min"], 1.0)
    y0 = rng.uniform([n, 1]) * (1.0 - side)
    x0 = rng.uniform([n, 1]) * (1.0 - side)
    boxes = tf.concat([y0, x0, y0 + side, x0 + side], axis=1)
    size = decoding.IMAGE_SIZE
    out = tf.image.crop_and_resize(images, boxes, tf.range(n), (size, size))
    lo, hi = recipe["contrast"]
    out = out * rng.uniform([n, 1, 1, 1], lo, hi) + rng.uniform([n, 1, 1, 1], -recipe["brightness"], recipe["brightness"])
    out = out + recipe["noise_std"] * rng.normal(tf.shape(out))
    return tf.clip_by_value(out, -1.0, 1.0)


def _nt_xent(tf, a, b, temperature):
    a = tf.math.l2_normalize(a, axis=1)
    b = tf.math.l2_normalize(b, axis=1)
    z = tf.concat([a, b], axis=0)
    n = tf.shape(a)[0]
    sim = tf.matmul(z, z, transpose_b=True) / temperature - 1e9 * tf.eye(2 * n)
    targets = tf.concat([tf.range(n, 2 * n), tf.range(0, n)], axis=0)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(targets, sim))


def _auc(labels, scores):
    labels = np.asarray(labels, bool)
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_encoder(path=None, out_dir=None, epochs=None, recipe=RECIPE, verbose=True):
    """Train the domain encoder on the train split only and write weights + config.json -> folder."""
    import keras
    import tensorflow as tf

    recipe = dict(recipe)
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    keras.utils.set_random_seed(recipe["seed"])
    tf.config.experimental.enable_op_determinism()
    split = recipe["split"]
    ds = dataset.load_dataset(path, classes=tuple(split["classes"]), flip=split["flip"])
    train_idx, val_idx = dataset.split_by_patient(ds.patients, split["val_fraction"], split["split_seed"])
    train, val = ds.subset(train_idx), ds.subset(val_idx)
    x = train.images
    y = (train.classes == "CT_COVID").astype(np.float32)[:, None]
    full, _ = build(recipe)
    opt = keras.optimizers.Adam(recipe["learning_rate"])
    rng = tf.random.Generator.from_seed(recipe["seed"])
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        v1 = _augment(tf, images, rng, recipe)
        v2 = _augment(tf, images, rng, recipe)
        with tf.GradientTape() as tape:
            _, l1, p1 = full(v1, training=True)
            _, l2, p2 = full(v2, training=True)
            cls = 0.5 * (bce(labels, l1) + bce(labels, l2))
            con = _nt_xent(tf, p1, p2, recipe["temperature"])
            loss = cls + con
        grads = tape.gradient(loss, full.trainable_variables)
        opt.apply_gradients(zip(grads, full.trainable_variables))
        return cls, con

    order_rng = np.random.RandomState(recipe["seed"])
    bs = recipe["batch_size"]
    history = []
    started = time.time()
    for epoch in range(recipe["epochs"]):
        order = order_rng.permutation(len(x))
        losses = []
        for s in range(0, len(order) - bs + 1, bs):  # full batches only (contrastive negatives)
            idx = order[s:s + bs]
            losses.append([float(v) for v in step(tf.constant(x[idx]), tf.constant(y[idx]))])
        cls, con = np.mean(losses, axis=0)
        history.append({"epoch": epoch + 1, "class_loss": round(float(cls), 4), "contrastive_loss": round(float(con), 4)})
        if verbose:
            print(f"epoch {epoch + 1}/{recipe['epochs']}: class {cls:.4f}  contrastive {con:.4f}  ({time.time() - started:.0f} s)", flush=True)
    logits = np.concatenate([np.asarray(full(val.images[s:s + 256], training=False)[1])[:, 0] for s in range(0, len(val), 256)])
    val_labels = val.classes == "CT_COVID"
    out_dir = pathlib.Path(out_dir or ENCODER_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_NAME
    full.save_weights(weights)
    config = {
        "description": "Domain encoder for KID/FID/PRDC features; see covgan_utils/encoder.py for the recipe.",
        "weights": WEIGHTS_NAME,
        "weights_sha256": weights_digest(full),
        "file_sha256": sha256_of(weights),
        "recipe": recipe,
        "split": {
            "train_images": int(len(train)),
            "val_images": int(len(val)),
            "train_patients": int(len(np.unique(train.patients))),
            "val_patients": int(len(np.unique(val.patients))),
            "train_per_class": {c: int((train.classes == c).sum()) for c in split["classes"]},
            "val_per_class": {c: int((val.classes == c).sum()) for c in split["classes"]},
            "val_patients_sha256": hashlib.sha256("\n".join(sorted(np.unique(val.patients))).encode()).hexdigest(),
        },
        "validation": {
            "covid_accuracy": float(((logits > 0) == val_labels).mean()),
            "covid_auc": _auc(val_labels, logits),
        },
        "history": history,
        "train_seconds": round(time.time() - started, 1),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out_dir
