"""Run folders: the one place runs are numbered, found and loaded, and the released generator exported.

A run folder `models/<NNNNN>-<name>/` is self-describing: `config.json`, checkpoints or a model file,
logs. GAN runs are named by preset (`00003-quick`), autoencoder runs `<NNNNN>-autoencoder[-<preset>]`;
both share one locked numbering. The released generator lives in `models/release/` (float16 arrays
+ `config.json` + `source.json`).

Every flag that names a run (`--run`, `--gan`, `--generator`, `--autoencoder`) takes a *designator*:
a path to a run folder, a run number (`3`), a folder name under models/ (`00003-quick`), `latest`
(the newest run of that kind that holds a model), or `release` (the released generator; GAN only).
Loading reads plain arrays only: it runs no code from the files.
"""
import fcntl
import json
import pathlib
import re

import numpy as np

from covgan_utils import checkpoints
from covgan_utils import config as config_lib
from covgan_utils.nets import families
from covgan_utils.util import files, paths

LATEST, RELEASE = "latest", "release"
KINDS = ("gan", "autoencoder")
AUTOENCODER_SUFFIX = "autoencoder"  # autoencoder runs are <NNNNN>-autoencoder[-<preset>]
AUTOENCODER_MODEL = "autoencoder.keras"
WEIGHTS = "generator.npz"  # the release's generator arrays
RUN_NAME = re.compile(r"^(\d{5})-(.+)$")


# ---------------------------------------------------------------- numbering and finding

def new_run_dir(name, root=None):
    """Create `root/<NNNNN>-<name>/` with the next free number (any kind of run); runs started at once get distinct numbers."""
    root = pathlib.Path(root or paths.MODELS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".run-numbers.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # numbering is read-then-create: one process at a time
        numbers = [int(m.group(1)) for p in root.iterdir() if (m := RUN_NAME.match(p.name))]
        run_dir = root / f"{max(numbers, default=-1) + 1:05d}-{name}"
        run_dir.mkdir()
    return run_dir


def kind_of(run_dir):
    """"autoencoder" for an autoencoder run folder, else "gan"."""
    name = pathlib.Path(run_dir).name
    m = RUN_NAME.match(name)
    return "autoencoder" if m and m.group(2).split("-")[0] == AUTOENCODER_SUFFIX else "gan"


def has_model(run_dir, kind="gan"):
    """Whether a run folder holds something to load: a checkpoint (GAN) or the saved model (autoencoder)."""
    run_dir = pathlib.Path(run_dir)
    if kind == "autoencoder":
        return (run_dir / AUTOENCODER_MODEL).is_file()
    return checkpoints.latest_checkpoint(run_dir) is not None


def numbered_runs(kind="gan", preset=None, root=None):
    """Run folders `root/<NNNNN>-*` of one kind, oldest first (GAN runs of one `preset` when given)."""
    root = pathlib.Path(root or paths.MODELS_DIR)
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        m = RUN_NAME.match(p.name)
        if m and p.is_dir() and kind_of(p) == kind and (preset is None or m.group(2) == preset):
            found.append(p)
    return found


def latest_run(kind="gan", preset=None, root=None):
    """Newest run folder of `kind` that holds a model (GAN runs of one `preset` when given), or None.
    Autoencoder runs prefer any preset over smoke runs."""
    runs = [p for p in numbered_runs(kind, preset, root) if has_model(p, kind)]
    if kind == "autoencoder":
        runs = [p for p in runs if not p.name.endswith("-smoke")] or runs
    return runs[-1] if runs else None


def _how_to_make(kind):
    if kind == "autoencoder":
        return "train one with `python -m covgan_utils widget train`"
    return "train one with `python -m covgan_utils train`, or use `release`"


def resolve_run(designator, kind="gan", root=None):
    """A run designator -> an existing folder: a path, a run number, a name under models/, "latest",
    or (GAN) "release" / None for the released generator. One-line errors say what was looked for."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of run {kind!r}; choose from {', '.join(KINDS)}")
    root = pathlib.Path(root or paths.MODELS_DIR)
    text = "" if designator is None else str(designator)
    if text in ("", RELEASE):
        if kind != "gan":
            raise ValueError(f"there is no released {kind}; pass a run folder, a run number or `latest`")
        return pathlib.Path(paths.RELEASE_DIR)
    if text == LATEST:
        found = latest_run(kind, root=root)
        if found is None:
            raise FileNotFoundError(f"no {kind} run with a model in {root}: {_how_to_make(kind)}")
        return found
    folder = _find(text, root)
    if folder is None:
        raise FileNotFoundError(f"run {text} does not exist (looked for a folder, or a run number or name in {root})")
    if folder.parent.resolve() == root.resolve() and RUN_NAME.match(folder.name) and kind_of(folder) != kind:
        raise ValueError(f"run {folder.name} is {_a(kind_of(folder))} run, not {_a(kind)} run; pass {_a(kind)} run")
    return folder


def _a(kind):
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _find(text, root):
    path = pathlib.Path(text).expanduser()
    if path.is_dir():
        return path
    if text.isdigit():
        hits = sorted(root.glob(f"{int(text):05d}-*"))
        if hits:
            return hits[0]
    if (root / text).is_dir():
        return root / text
    return None


def is_release(folder):
    """Whether `folder` holds a released generator (generator.npz + config.json) rather than a run."""
    folder = pathlib.Path(folder)
    return (folder / WEIGHTS).is_file() and checkpoints.latest_checkpoint(folder) is None


# ---------------------------------------------------------------- loading generators

def model_config(run=None):
    """Config of a GAN run designator (None: the released model)."""
    return config_lib.Config.load(resolve_run(run))


def load_generator(run=None, checkpoint="latest"):
    """Generator of a GAN run designator (None: the released model), EMA weights when trained with EMA.

    `checkpoint` is "latest", "best", an epoch or a file of the run. "latest" skips damaged checkpoints
    (`checkpoints.CorruptCheckpointWarning`) for the previous one; a damaged "best", epoch or file
    raises a one-line `checkpoints.CorruptCheckpointError`."""
    return read_generator(run, checkpoint)[0]


def read_generator(run=None, checkpoint="latest"):
    """(generator, source) as `load_generator`; source = {"checkpoint": file name, "epoch", "weights"} of
    the checkpoint actually loaded ({"release": folder} for the released model)."""
    folder = resolve_run(run)
    if str(run or RELEASE) == RELEASE or is_release(folder):
        return load_release(folder), {"release": folder.name}
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} does not exist")
    generator = families.generator_for(config_lib.Config.load(folder))

    def load(file):  # whole file read and checked before anything is assigned
        arrays = checkpoints.read_arrays(file)
        group = "ema" if any(k.startswith("ema/") for k in arrays) else "g"
        checkpoints.load_groups(file, {group: generator.variables}, arrays)
        epoch = int(arrays["epoch"]) if "epoch" in arrays else None
        return {"checkpoint": file.name, "epoch": epoch, "weights": "EMA generator" if group == "ema" else "generator"}

    if checkpoint == "latest":
        return generator, checkpoints.load_newest(folder, load)[1]
    file = checkpoints.checkpoint_file(folder, checkpoint)
    try:
        return generator, load(file)
    except checkpoints.CorruptCheckpointError as err:
        fix = "use --checkpoint latest" if checkpoint == "best" else "use --checkpoint latest or another epoch"
        raise err.with_fix(fix) from None


# ---------------------------------------------------------------- the release

def load_release(release_dir=None):
    """Generator of the released model (EMA weights, stored as float16 arrays; loading runs no code)."""
    release_dir = pathlib.Path(release_dir or paths.RELEASE_DIR)
    file = release_dir / WEIGHTS
    if not file.is_file():
        raise FileNotFoundError(f"no released model at {file}; pass --run RUN_DIR (a folder under models/) or train one")
    generator = families.generator_for(config_lib.Config.load(release_dir))
    try:  # the whole file is read and checked before anything is assigned
        checkpoints.load_groups(file, {"g": generator.variables})
    except checkpoints.CorruptCheckpointError as err:
        raise err.with_fix("restore it with `git checkout models/release` or pass --run RUN_DIR (a folder under models/)") from None
    return generator


def export_release(run, release_dir=None, checkpoint="latest"):
    """Copy a GAN run's generator (EMA when present) into `release_dir` as float16 arrays + config.json + source.json."""
    run_dir = resolve_run(run)
    if is_release(run_dir):
        raise ValueError(f"{run_dir} is already a release; pass the run folder it came from")
    release_dir = pathlib.Path(release_dir or paths.RELEASE_DIR)
    real_run, real_release = run_dir.resolve(), release_dir.resolve()
    if real_release == real_run or real_run in real_release.parents:
        raise ValueError(f"--out {release_dir} is inside the run folder {run_dir}: a release there would turn the run into a release; "
                         f"choose another folder")
    release_dir.mkdir(parents=True, exist_ok=True)
    generator, source = read_generator(run_dir, checkpoint)
    arrays = checkpoints.to_arrays("g", generator.variables, half=True)
    files.write_atomic(release_dir / WEIGHTS, lambda fh: np.savez_compressed(fh, **arrays))
    config_lib.Config.load(run_dir).save(release_dir)
    files.write_text_atomic(release_dir / "source.json", json.dumps({"run": run_dir.name, **source}) + "\n")
    return release_dir / WEIGHTS
