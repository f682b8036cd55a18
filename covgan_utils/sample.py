"""Seed-addressed sampling, latent interpolation (linear and spherical), grids, strips and GIFs."""
import pathlib

import numpy as np
from PIL import Image

from covgan_utils import data as data_lib

LATENT_DIM = 100


def noise_for_seeds(seeds, latent_dim=LATENT_DIM):
    """[N, latent_dim] float32: row i is `np.random.RandomState(seeds[i]).randn(latent_dim)`."""
    return np.stack([np.random.RandomState(int(s)).randn(latent_dim) for s in seeds]).astype(np.float32)


def generate_from_noise(generator, z, batch_size=64):
    """Run the generator on noise [N, latent] -> images [N, 128, 128, 1] in [-1, 1]."""
    out = [np.asarray(generator(z[i : i + batch_size], training=False)) for i in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float32)


def generate(generator, seeds, batch_size=64):
    """Images [N, 128, 128, 1] in [-1, 1] for integer seeds."""
    seeds = list(seeds)
    latent_dim = int(generator.input_shape[-1])
    return generate_from_noise(generator, noise_for_seeds(seeds, latent_dim), batch_size)


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


def interpolate(generator, seed_a, seed_b, steps=8, mode="linear"):
    """Images [steps, 128, 128, 1] along the path between the noise of two seeds."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    paths_by_mode = {"linear": lerp, "slerp": slerp}
    if mode not in paths_by_mode:
        raise ValueError(f"unknown mode {mode!r}; choose 'linear' or 'slerp'")
    z_a, z_b = noise_for_seeds([seed_a, seed_b], int(generator.input_shape[-1]))
    return generate_from_noise(generator, paths_by_mode[mode](z_a, z_b, steps))


# ---------------------------------------------------------------- files

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


# ---------------------------------------------------------------- loading generators

def load_generator(run_dir=None, checkpoint="latest"):
    """Generator of a run folder (EMA weights when trained with EMA), or the released model when `run_dir` is None.

    `checkpoint` is "latest", "best" or a path/epoch. Only plain arrays are read: loading runs no code.
    """
    from covgan_utils import release

    if run_dir is None:
        return release.load_release()
    return _load_run_generator(pathlib.Path(run_dir), checkpoint)


def _load_run_generator(run_dir, checkpoint):
    from covgan_utils import config as config_lib
    from covgan_utils import train as train_lib

    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    config = config_lib.Config.load(run_dir)
    file = checkpoint_file(run_dir, checkpoint)
    generator = train_lib.build_generator(config)
    with np.load(file, allow_pickle=False) as z:
        group = "ema" if any(k.startswith("ema/") for k in z.files) else "g"
        train_lib.assign_group(generator.variables, z, group, file)
    return generator


def checkpoint_file(run_dir, checkpoint="latest"):
    """Path of a run's checkpoint: "latest", "best", an epoch number, or a file path."""
    from covgan_utils import train as train_lib

    if checkpoint == "latest":
        file = train_lib.latest_checkpoint(run_dir)
    elif checkpoint == "best":
        file = run_dir / "checkpoint-best.npz"
    elif isinstance(checkpoint, int) or str(checkpoint).isdigit():
        file = run_dir / f"checkpoint-{int(checkpoint):06d}.npz"
    else:
        file = pathlib.Path(checkpoint)
    if file is None or not file.is_file():
        raise FileNotFoundError(f"no checkpoint {checkpoint!r} in {run_dir} (has training saved one yet?)")
    return file


def latest_run():
    """Newest run folder under models/, or None."""
    from covgan_utils import train as train_lib

    return train_lib.latest_run()


# ---------------------------------------------------------------- CLI

def add_commands(subparsers):
    s = subparsers.add_parser("sample", help="write N generated images seed<S+i>.png")
    s.add_argument("--run", help="run folder (default: the released model)")
    s.add_argument("--n", type=int, default=16)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="first seed")
    s.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    s.set_defaults(func=_cli_sample)
    i = subparsers.add_parser("interpolate", help="strip or GIF between the noise of two seeds")
    i.add_argument("--run", help="run folder (default: the released model)")
    i.add_argument("--seed-a", type=int, required=True)
    i.add_argument("--seed-b", type=int, required=True)
    i.add_argument("--steps", type=int, default=8)
    i.add_argument("--out", required=True, help="output .png (strip) or .gif")
    i.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    i.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    i.set_defaults(func=_cli_interpolate)


def sample_to_folder(generator, n, out, seed=0):
    """Write `n` images `seed<seed+i>.png` into `out`; returns their paths."""
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = range(seed, seed + n)
    files = []
    for s, image in zip(seeds, generate(generator, seeds)):
        files.append(out / f"seed{s}.png")
        save_png(image, files[-1])
    return files


def _cli_sample(args):
    files = sample_to_folder(load_generator(args.run, args.checkpoint), args.n, args.out, args.seed)
    print(f"wrote {len(files)} images to {args.out}")


def _cli_interpolate(args):
    if pathlib.Path(args.out).suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--out must end in .png or .gif, got {args.out}")
    frames = interpolate(load_generator(args.run, args.checkpoint), args.seed_a, args.seed_b, args.steps, args.mode)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_strip(frames, args.out)
    print(args.out)
