"""Seed-addressed noise, running a generator on it, and writing images (PNG, grids, strips, GIFs).

Kept below `train` so that training, sampling and the metrics callback share one definition of
"the image of seed s": row i of `noise_for_seeds(seeds)` is `np.random.RandomState(seeds[i]).randn(latent_dim)`
on every backend.
"""
import contextlib
import pathlib

import keras
import numpy as np
from PIL import Image

from covgan_utils import data as data_lib
from covgan_utils import stylegan

LATENT_DIM = 100


def noise_for_seeds(seeds, latent_dim=LATENT_DIM):
    """[N, latent_dim] float32: row i is `np.random.RandomState(seeds[i]).randn(latent_dim)`."""
    return np.stack([np.random.RandomState(int(s)).randn(latent_dim) for s in seeds]).astype(np.float32)


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
    """Run the generator on noise [N, latent] -> images [N, 128, 128, 1] in [-1, 1] (clipped: the style
    family's output is linear). `label`: class index for conditional generators; `truncation` psi < 1
    pulls the style family's w towards its average (truncation trick)."""
    labels = labels_for(generator, len(z), label)
    if truncation != 1.0:
        if "mapping" not in {layer.name for layer in generator.layers}:
            raise ValueError(f"truncation {truncation} needs a style-based generator (arch 'style'); this one has no mapping network")
        out = stylegan.truncated_images(generator, z, truncation, labels, batch_size)
    else:
        out = np.concatenate([np.asarray(generator(_inputs(z, labels, i, batch_size), training=False)) for i in range(0, len(z), batch_size)])
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _inputs(z, labels, start, batch_size):
    part = z[start : start + batch_size]
    return part if labels is None else [part, labels[start : start + batch_size]]


def generate(generator, seeds, batch_size=64, label=None, truncation=1.0):
    """Images [N, 128, 128, 1] in [-1, 1] for integer seeds (of class `label` when conditional)."""
    seeds = list(seeds)
    return generate_from_noise(generator, noise_for_seeds(seeds, latent_dim_of(generator)), batch_size, label, truncation)


def save_png(image, path):
    """One image [128, 128, 1] in [-1, 1] -> 8-bit grayscale PNG."""
    Image.fromarray(data_lib.to_uint8(image)[..., 0], mode="L").save(path)


def make_grid(images, cols=None, pad=2):
    """[N, H, W, 1] in [-1, 1] -> uint8 [rows*(H+pad)-pad, cols*(W+pad)-pad] mosaic."""
    images = data_lib.to_uint8(images)[..., 0]  # [N, H, W]
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * (h + pad) - pad, cols * (w + pad) - pad), np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return grid


def save_grid(images, path, cols=None):
    Image.fromarray(make_grid(images, cols), mode="L").save(path)


def save_strip(images, path, duration_ms=120):
    """Interpolation frames -> a one-row PNG strip, or an animated GIF (forth and back) for *.gif."""
    path = pathlib.Path(path)
    if path.suffix.lower() == ".gif":
        frames = [Image.fromarray(f[..., 0], mode="L") for f in data_lib.to_uint8(images)]
        frames = frames + frames[-2:0:-1]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    elif path.suffix.lower() == ".png":
        save_grid(images, path, cols=len(images))
    else:
        raise ValueError(f"output must end in .png or .gif, got {path.name}")
