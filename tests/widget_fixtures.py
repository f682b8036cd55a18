"""Small synthetic COVID-CT-like data set, a smoke autoencoder run and a smoke GAN run shared by the widget tests."""
import hashlib
import pathlib

import cv2
import numpy as np

from covgan_utils import config
from covgan_utils.data import dataset, sources
from covgan_utils.training import loop
from covgan_utils.widget import autoencoder

FAST_PROJECTION = {"steps": 5, "starts": 1, "features": None}  # ProjectionOptions fields of projections that take seconds


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


def smoke_config(scans, epochs=2):
    """The smoke autoencoder config on the synthetic scans (all of them, no GAN overlay)."""
    return autoencoder.get_config("smoke", epochs=epochs, data_path=str(scans), max_train=0, gan_run=None)


def smoke_run(tmp_dir, epochs=2, name="00000-autoencoder"):
    """Train the smoke autoencoder on synthetic scans in tmp_dir/scans (made if missing); returns its run folder."""
    tmp_dir = pathlib.Path(tmp_dir)
    scans = tmp_dir / "scans" if (tmp_dir / "scans").is_dir() else make_scans(tmp_dir / "scans")
    return autoencoder.train_autoencoder(smoke_config(scans, epochs), run_dir=tmp_dir / name, verbose=0)


def smoke_gan_run(tmp_dir, epochs=1, name="00001-smoke"):
    """A real GAN run: the smoke preset trained for `epochs` on the synthetic scans of tmp_dir/scans; returns its folder."""
    tmp_dir = pathlib.Path(tmp_dir)
    scans = tmp_dir / "scans" if (tmp_dir / "scans").is_dir() else make_scans(tmp_dir / "scans")
    images = dataset.load_dataset(scans, classes=sources.CLASSES, flip=False).images  # [32, 128, 128, 1]
    return loop.train(config.get_preset("smoke", epochs=epochs), tmp_dir / name, images=images, verbose=False)


def tree_digest(folder):
    """{path relative to folder: sha256 of its bytes} of every file under folder (folders listed with None)."""
    folder = pathlib.Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}
