"""Seed-addressed sampling: noise from seeds, running a generator on it, interpolation between two seeds
(linear and spherical), class labels, and writing images (PNG, grids, strips, GIFs).

One definition of "the image of seed s", shared by training, sampling and the metrics: row i of
`noise_for_seeds(seeds)` is `np.random.RandomState(seeds[i]).randn(latent_dim)` on every backend.
Loading a generator is `covgan_utils.runs`; nothing here imports training.
"""
import contextlib
import json
import pathlib

import keras
import numpy as np
from PIL import Image

from covgan_utils import checkpoints
from covgan_utils.data import decoding, scaling
from covgan_utils.nets import stylegan
from covgan_utils.util import fields, files

LATENT_DIM = 100


SEED_MAX = fields.SEED_MAX  # np.random.RandomState takes seeds in [0, 2**32 - 1]


def seed_range(first, n):
    """Seeds first..first+n-1; a one-line ValueError naming --seed and --n when they leave [0, SEED_MAX]."""
    if not 0 <= first <= SEED_MAX:
        raise ValueError(f"--seed {first} is outside the seed range [0, {SEED_MAX}]; choose a --seed in it")
    if first + n - 1 > SEED_MAX:
        raise ValueError(f"--seed {first} with --n {n} reaches seed {first + n - 1}, past the seed range [0, {SEED_MAX}]; "
                         f"choose --seed {SEED_MAX - n + 1} or less, or a smaller --n")
    return list(range(first, first + n))


def noise_for_seeds(seeds, latent_dim=LATENT_DIM):
    """[N, latent_dim] float32: row i is `np.random.RandomState(seeds[i]).randn(latent_dim)`."""
    seeds = [int(s) for s in seeds]
    outside = [s for s in seeds if not 0 <= s <= SEED_MAX]
    if outside:
        raise ValueError(f"seed {outside[0]} is outside the seed range [0, {SEED_MAX}]; choose --seed (and --n) so that every seed lies in it")
    return np.stack([np.random.RandomState(s).randn(latent_dim) for s in seeds]).astype(np.float32)


def latent_dim_of(generator):
    """Width of a generator's noise input (its first input: conditional ones also take a label)."""
    return int(generator.inputs[0].shape[-1])


def is_conditional(generator):
    """Whether a generator takes a class label [N, 1] beside its noise."""
    return len(generator.inputs) == 2


def labels_for(generator, n, label=None):
    """Class labels [n, 1] int32 for a conditional generator (class 0, the first of its config's `classes`,
    when `label` is None), None for an unconditional one (which refuses a label)."""
    if not is_conditional(generator):
        if label not in (None, 0):
            raise ValueError(f"class {label} asked of an unconditional generator; it has no class input (train with conditional=true)")
        return None
    return np.full((n, 1), 0 if label is None else int(label), np.int32)


def _class_embeddings(model):
    """Every Embedding layer of a model, nested models included (a conditional generator's class embeddings)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _class_embeddings(layer)


@contextlib.contextmanager
def blended_class(generator, label_a, label_b, t):
    """Inside the block, class input `label_a` stands for the embedding (1 - t) e_a + t e_b of every class
    embedding of the generator (t outside [0, 1] extrapolates); the weights are restored on exit. Call the
    generator eagerly inside it (compiled functions may hold the old values)."""
    layers = list(_class_embeddings(generator)) if is_conditional(generator) else []
    if not layers:
        raise ValueError("class interpolation needs a conditional generator (train with conditional=true)")
    saved = [np.asarray(layer.embeddings) for layer in layers]
    try:
        for layer, table in zip(layers, saved):
            mixed = table.copy()
            mixed[label_a] = (1.0 - t) * table[label_a] + t * table[label_b]  # [classes, dim]
            layer.embeddings.assign(mixed)
        yield generator
    finally:
        for layer, table in zip(layers, saved):
            layer.embeddings.assign(table)


def generate_from_noise(generator, z, batch_size=64, label=None, truncation=1.0):
    """Run the generator on noise [N, latent] -> images [N, 128, 128, 1] in [-1, 1] (seen through the
    generator's `output_scaling`, then clipped: the style family's output is linear). `label`: class index for
    conditional generators; `truncation` psi < 1 pulls the style family's w towards its average (truncation trick)."""
    labels = labels_for(generator, len(z), label)
    if truncation != 1.0:
        if "mapping" not in {layer.name for layer in generator.layers}:
            raise ValueError(f"truncation {truncation} needs a style-based generator (arch 'style'); this one has no mapping network")
        out = stylegan.truncated_images(generator, z, truncation, labels, batch_size)
    else:
        out = np.concatenate([np.asarray(generator(_inputs(z, labels, i, batch_size), training=False)) for i in range(0, len(z), batch_size)])
    out = scaling.to_view(out, getattr(generator, "output_scaling", "full"))  # [N, 128, 128, 1]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _inputs(z, labels, start, batch_size):
    part = z[start : start + batch_size]
    return part if labels is None else [part, labels[start : start + batch_size]]


def generate(generator, seeds, batch_size=64, label=None, truncation=1.0):
    """Images [N, 128, 128, 1] in [-1, 1] for integer seeds (of class `label` when conditional)."""
    seeds = list(seeds)
    return generate_from_noise(generator, noise_for_seeds(seeds, latent_dim_of(generator)), batch_size, label, truncation)


def save_png(image, path):
    """One image [128, 128, 1] in [-1, 1] -> 8-bit grayscale PNG, written atomically (a kill leaves no half file)."""
    picture = Image.fromarray(decoding.to_uint8(image)[..., 0], mode="L")
    files.write_atomic(path, lambda fh: picture.save(fh, format="PNG"))


def make_grid(images, cols=None, pad=2):
    """[N, H, W, 1] in [-1, 1] -> uint8 [rows*(H+pad)-pad, cols*(W+pad)-pad] mosaic."""
    images = decoding.to_uint8(images)[..., 0]  # [N, H, W]
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return grid


def save_grid(images, path, cols=None):
    """[N, H, W, 1] in [-1, 1] -> one PNG mosaic, written atomically."""
    picture = Image.fromarray(make_grid(images, cols), mode="L")
    return files.write_atomic(path, lambda fh: picture.save(fh, format="PNG"))


def save_strip(images, path, duration_ms=120):
    """Interpolation frames -> a one-row PNG strip, or an animated GIF (forth and back) for *.gif."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".gif":
        frames = [Image.fromarray(f[..., 0], mode="L") for f in decoding.to_uint8(images)]
        frames = frames + frames[-2:0:-1]
        return files.write_atomic(path, lambda fh: frames[0].save(fh, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0))
    if path.suffix.lower() == ".png":
        return save_grid(images, path, cols=len(images))
    raise ValueError(f"output must end in .png or .gif, got {path.name}")


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


# ---------------------------------------------------------------- CLI

MANIFEST = ".covgan-samples.json"  # which model wrote the images of a sample folder


def _claim_folder(out, model, overwrite):
    """Refuse a folder holding another model's samples (or samples of unknown origin) unless `overwrite`."""
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            owner = json.loads(manifest.read_text())
        except (ValueError, UnicodeDecodeError):
            owner = {"weights_sha256": "unreadable"}
        if owner.get("weights_sha256") != model["weights_sha256"] and not overwrite:
            raise ValueError(f"--out {out} holds samples of another model ({owner.get('model', 'unknown')}); choose another folder or pass --overwrite")
    elif any(out.glob("seed*.png")) and not overwrite:
        raise ValueError(f"--out {out} holds seed*.png images of an unknown model; choose another folder or pass --overwrite")
    files.write_text_atomic(manifest, json.dumps(model, indent=2) + "\n")


def sample_to_folder(generator, n, out, seed=0, label=None, truncation=1.0, model=None, overwrite=False, batch_size=64):
    """Write `n` images `seed<seed+i>.png` into `out` (class `label` when conditional); returns their paths.

    Images are generated and written batch by batch (memory bounded by `batch_size`), each PNG
    atomically. `out/.covgan-samples.json` records the model (`model`: e.g. {"model": "run 00003-quick"})
    and its weights digest; a folder holding another model's samples is refused unless `overwrite`."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    seed_range(seed, n)  # refused before the folder is touched
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"model": "generator", **(model or {}), "weights_sha256": checkpoints.weights_digest(generator), "label": label, "truncation": truncation}
    _claim_folder(out, record, overwrite)
    written = []
    for start in range(seed, seed + n, batch_size):
        seeds = list(range(start, min(start + batch_size, seed + n)))
        for s, image in zip(seeds, generate(generator, seeds, batch_size, label=label, truncation=truncation)):
            written.append(save_png(image, out / f"seed{s}.png"))
    return written
