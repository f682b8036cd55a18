"""The released pretrained generator in models/release/: float16 weights (.npz) + config.json."""
import json
import pathlib

import numpy as np

from covgan_utils import checkpoints, paths, train
from covgan_utils import config as config_lib

WEIGHTS = "generator.npz"


def load_release(release_dir=None):
    """Generator of the released model (EMA weights, stored as float16 arrays; loading runs no code)."""
    release_dir = pathlib.Path(release_dir or paths.RELEASE_DIR)
    file = release_dir / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"no released model at {file}; pass --run RUN_DIR (a folder under models/) or train one")
    config = config_lib.Config.load(release_dir)
    generator = train.build_generator(config)
    try:  # the whole file is read and checked before anything is assigned
        checkpoints.load_groups(file, {"g": generator.variables})
    except checkpoints.CorruptCheckpointError as err:
        raise err.with_fix("restore it with `git checkout models/release` or pass --run RUN_DIR (a folder under models/)") from None
    return generator


def export_release(run_dir, release_dir=None, checkpoint="latest"):
    """Copy a run's generator (EMA when present) into `release_dir` as float16 arrays + config.json."""
    release_dir = pathlib.Path(release_dir or paths.RELEASE_DIR)
    release_dir.mkdir(parents=True, exist_ok=True)
    generator, source = train.read_run_generator(run_dir, checkpoint)
    np.savez_compressed(release_dir / WEIGHTS, **checkpoints.to_arrays("g", generator.variables, half=True))
    config_lib.Config.load(run_dir).save(release_dir)
    source = {"run": pathlib.Path(run_dir).name, **source}
    (release_dir / "source.json").write_text(json.dumps(source) + "\n")
    return release_dir / WEIGHTS


def _cli_release(args):
    print(export_release(args.run, args.out, args.checkpoint))
