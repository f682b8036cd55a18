"""Seed-addressed sampling, latent interpolation (linear and spherical), grids, strips and GIFs."""
import pathlib

import numpy as np

from covgan_utils import checkpoints, release, train
from covgan_utils.images import (  # noqa: F401  (the sampling API: defined below train, used from here)
    LATENT_DIM, generate, generate_from_noise, is_conditional, latent_dim_of, make_grid, noise_for_seeds, save_grid, save_png, save_strip,
)
from covgan_utils import config as config_lib
from covgan_utils import paths

CLASS_NAMES = {"covid": "CT_COVID", "non-covid": "CT_NonCOVID"}


# ---------------------------------------------------------------- interpolation

def lerp(z_a, z_b, steps):
    """Linear path from z_a to z_b (the paper's): [steps, latent], endpoints included."""
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]  # [K, 1]
    return ((1 - t) * z_a[None] + t * z_b[None]).astype(np.float32)


def slerp(z_a, z_b, steps):
    """Spherical path from z_a to z_b (White 2016): [steps, latent], endpoints included."""
    t = np.linspace(0.0, 1.0, steps)[:, None]  # [K, 1]
    a, b = z_a.astype(np.float64), z_b.astype(np.float64)
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return lerp(z_a, z_b, steps)
    path = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    path[0], path[-1] = a, b
    return path.astype(np.float32)


def interpolate(generator, seed_a, seed_b, steps=8, mode="linear", label=None, truncation=1.0):
    """Images [steps, 128, 128, 1] along the path between the noise of two seeds (class `label` when conditional)."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    paths_by_mode = {"linear": lerp, "slerp": slerp}
    if mode not in paths_by_mode:
        raise ValueError(f"unknown mode {mode!r}; choose 'linear' or 'slerp'")
    z_a, z_b = noise_for_seeds([seed_a, seed_b], latent_dim_of(generator))
    return generate_from_noise(generator, paths_by_mode[mode](z_a, z_b, steps), label=label, truncation=truncation)


# ---------------------------------------------------------------- loading generators

def load_generator(run_dir=None, checkpoint="latest"):
    """Generator of a run folder (EMA weights when trained with EMA), or the released model when `run_dir` is None.

    `checkpoint` is "latest", "best" or a path/epoch. Only plain arrays are read: loading runs no code.
    """
    if run_dir is None:
        return release.load_release()
    return train.load_run_generator(pathlib.Path(run_dir), checkpoint)


def model_config(run_dir=None):
    """Config of a run folder, or of the released model when `run_dir` is None."""
    return config_lib.Config.load(run_dir or paths.RELEASE_DIR)


def class_label(config, name):
    """Class index for `--class covid|non-covid` (None: no class input, or the model's default).

    A conditional model takes any class in its `classes`; an unconditional one only the class it was
    trained on alone."""
    if name is None:
        return None
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown class {name!r}; choose from {', '.join(CLASS_NAMES)}")
    wanted = CLASS_NAMES[name]
    if config.conditional:
        if wanted not in config.classes:
            raise ValueError(f"this model was trained on {', '.join(config.classes)}, not {wanted}; choose another --class")
        return config.classes.index(wanted)
    if tuple(config.classes) == (wanted,):
        return None
    raise ValueError(f"this model is unconditional, trained on {', '.join(config.classes)}: it cannot generate --class {name} (train one with conditional=true)")


checkpoint_file = checkpoints.checkpoint_file


def latest_run():
    """Newest run folder under models/, or None."""
    return train.latest_run()


# ---------------------------------------------------------------- CLI

def sample_to_folder(generator, n, out, seed=0, label=None, truncation=1.0):
    """Write `n` images `seed<seed+i>.png` into `out` (class `label` when conditional); returns their paths."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(seed, seed + n)
    files = []
    for s, image in zip(seeds, generate(generator, seeds, label=label, truncation=truncation)):
        files.append(out / f"seed{s}.png")
        save_png(image, files[-1])
    return files


def _cli_sample(args):
    label = class_label(model_config(args.run), args.cls) if args.cls else None
    files = sample_to_folder(load_generator(args.run, args.checkpoint), args.n, args.out, args.seed, label, args.truncation)
    print(f"wrote {len(files)} images to {args.out}")


def _cli_interpolate(args):
    label = class_label(model_config(args.run), args.cls) if args.cls else None
    frames = interpolate(load_generator(args.run, args.checkpoint), args.seed_a, args.seed_b, args.steps, args.mode, label, args.truncation)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_strip(frames, args.out)
    print(args.out)
