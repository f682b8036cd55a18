"""Small synthetic COVID-CT-like data set and smoke autoencoder run shared by the widget tests."""
import pathlib

import cv2
import numpy as np

from covgan_utils import config
from covgan_utils.nets import families
from covgan_utils.widget import autoencoder


def make_scans(folder, n_patients=4, slices=4, seed=0):
    """CT_COVID/ and CT_NonCOVID/ with blurred-ellipse 'lungs' (varied size/brightness) as PNGs; returns folder."""
    rng = np.random.RandomState(seed)
    folder = pathlib.Path(folder)
    for k, cls in enumerate(("CT_COVID", "CT_NonCOVID")):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for p in range(n_patients):
            for s in range(slices):
                image = np.full((160, 160), 40, np.uint8)
                w, h = rng.randint(18, 34), rng.randint(30, 60)
                cv2.ellipse(image, (50, 80), (w, h), 0, 0, 360, int(rng.randint(120, 250)), -1)
                cv2.ellipse(image, (110, 80), (w, h), 0, 0, 360, int(rng.randint(120, 250)), -1)
                if k == 0:
                    cv2.circle(image, (rng.randint(40, 120), rng.randint(50, 110)), rng.randint(5, 15), 255, -1)
                image = cv2.GaussianBlur(image, (9, 9), 3)
                cv2.imwrite(str(folder / cls / f"pat{k}{p}_{s}.png"), image)
    return folder


def tiny_generator_images(n=6, seed=1):
    """Stand-in for GAN samples: the output of an untrained Keras generator [n, 128, 128, 1] in [-1, 1]."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    generator = keras.Sequential([
        keras.Input((100,)),
        layers.Dense(8 * 8 * 4, activation="relu"),
        layers.Reshape((8, 8, 4)),
        layers.UpSampling2D(16),
        layers.Conv2D(1, 3, padding="same", activation="tanh"),
    ])
    seeds = np.random.RandomState(seed).normal(size=(n, 100)).astype(np.float32)
    return np.asarray(generator.predict(seeds, verbose=0), np.float32)


FAST_PROJECTION = {"project_steps": 5, "project_starts": 1, "project_features": None}  # projection options that take seconds


def tiny_gan(seed=0):
    """An untrained smoke-preset GAN generator (z space, [N, 128, 128, 1] out) to project into."""
    import keras


    keras.utils.set_random_seed(seed)
    return families.generator_for(config.get_preset("smoke"))


def smoke_run(tmp_dir, epochs=2):
    """Train the smoke autoencoder on synthetic scans in tmp_dir; returns its run folder."""
    tmp_dir = pathlib.Path(tmp_dir)
    scans = make_scans(tmp_dir / "scans")
    config = autoencoder.get_config("smoke", epochs=epochs, data_path=str(scans), max_train=0, gan_run=None)
    return autoencoder.train_autoencoder(config, run_dir=tmp_dir / "00000-autoencoder", verbose=0)
