"""Downstream utility of synthetic scans: does adding synthetic COVID slices to the real training set
help a COVID-vs-non-COVID classifier on unseen patients?

The classifier (three conv layers on 64x64 inputs) is trained on the real images of the
patient-level train split (COVID + non-COVID, the shared `dataset.VAL_FRACTION` and `SPLIT_SEED`), once
without and once with the synthetic COVID images added, and tested on the validation patients.
Accuracy (threshold 0.5) and ROC AUC (`metrics.roc.auc`) are reported as mean and std over seeds.
"""
import time

import numpy as np

from covgan_utils.data import dataset, sources
from covgan_utils.metrics import roc


def _small(images, size):
    import cv2

    images = np.asarray(images, np.float32)
    return np.stack([cv2.resize(im[..., 0], (size, size), interpolation=cv2.INTER_AREA) for im in images])[..., None]


def _classifier(size, seed):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((size, size, 1)),
        layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dropout(0.3),
        layers.Dense(1, activation="sigmoid"),
    ])
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    return model


def downstream_utility(synthetic_covid, seeds=(0, 1, 2), epochs=10, size=64, batch_size=32, path=None, train=None, val=None, verbose=False):
    """Train the classifier with and without `synthetic_covid` ([N, 128, 128, 1] in [-1, 1], labelled
    COVID) for each seed -> {"real_only": {...}, "with_synthetic": {...}, ...}, each with accuracy
    and AUC mean/std and the per-seed values.

    `train`/`val` may be given as (images, labels) pairs (labels 1 = COVID) instead of loading the
    patient-level split of the real data.
    """
    started = time.time()
    if train is None or val is None:
        ds = dataset.load_dataset(path, classes=sources.CLASSES, flip=True)
        train_idx, val_idx = dataset.split_by_patient(ds.patients, dataset.VAL_FRACTION, dataset.SPLIT_SEED)
        train = (ds.images[train_idx], (ds.classes[train_idx] == "CT_COVID").astype(np.float32))
        val = (ds.images[val_idx], (ds.classes[val_idx] == "CT_COVID").astype(np.float32))
    x_train, y_train = _small(train[0], size), np.asarray(train[1], np.float32)
    x_val, y_val = _small(val[0], size), np.asarray(val[1], np.float32)
    x_syn = _small(synthetic_covid, size)
    settings = {
        "real_only": (x_train, y_train),
        "with_synthetic": (np.concatenate([x_train, x_syn]), np.concatenate([y_train, np.ones(len(x_syn), np.float32)])),
    }
    out = {}
    for name, (x, y) in settings.items():
        accs, aucs = [], []
        for seed in seeds:
            model = _classifier(size, seed)
            order = np.random.RandomState(seed).permutation(len(x))
            model.fit(x[order], y[order], epochs=epochs, batch_size=batch_size, verbose=0)
            scores = model.predict(x_val, verbose=0)[:, 0]
            accs.append(float(((scores > 0.5) == (y_val > 0.5)).mean()))
            aucs.append(roc.auc(y_val > 0.5, scores))
            if verbose:
                print(f"{name} seed {seed}: accuracy {accs[-1]:.3f} AUC {aucs[-1]:.3f}", flush=True)
        out[name] = {
            "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "auc_mean": float(np.mean(aucs)), "auc_std": float(np.std(aucs)),
            "accuracy": accs, "auc": aucs, "n_train": int(len(x)),
        }
    out["n_synthetic"] = int(len(x_syn))
    out["n_val"] = int(len(x_val))
    out["seeds"] = [int(s) for s in seeds]
    out["epochs"] = int(epochs)
    out["seconds"] = round(time.time() - started, 1)
    return out
