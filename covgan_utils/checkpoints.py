"""Checkpoint files: plain-array .npz archives (loading never runs code), written atomically, and
the same on every Keras backend (arrays are cast to the variable's dtype on load, so a run saved
under JAX resumes under TensorFlow and the other way round).

Loading is all-or-nothing: the whole file is read into memory and every array checked (count, shape)
before any variable is assigned, so a damaged file never leaves a model half-updated. A damaged or
mismatched file raises `CorruptCheckpointError` (a ValueError, one line naming the file); `load_newest`
skips such files with a `CorruptCheckpointWarning` and uses the previous checkpoint. Temporary files of
an interrupted write (`.checkpoint-*.tmp`) are never taken for checkpoints.
"""
import hashlib
import io
import os
import pathlib
import re
import time
import warnings

import numpy as np

from covgan_utils.util import files

CHECKPOINT_RE = re.compile(r"checkpoint-(\d{6})\.npz$")
TEMP_GLOB = ".checkpoint-*.tmp"  # what `save_arrays` leaves behind when killed mid-write
SLOW_ENV = "COVGAN_TEST_SLOW_CHECKPOINT"  # test hook: seconds to stretch every write over (kill tests)


class CorruptCheckpointWarning(UserWarning):
    """A checkpoint could not be loaded and was skipped in favour of an older one."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file is unreadable or does not fit the model; nothing was assigned."""

    def __init__(self, path, reason, fix=None):
        self.path, self.reason, self.fix = pathlib.Path(path), " ".join(str(reason).split()), fix
        super().__init__(f"{self.path}: cannot be loaded ({self.reason})" + (f"; {fix}" if fix else ""))

    def with_fix(self, fix):
        """The same error with a remedy appended to its message."""
        return CorruptCheckpointError(self.path, self.reason, fix)


def to_arrays(group, variables, half=False):
    """{"<group>/NNNN": numpy array} for a list of Keras variables; `half`: float32 ones as float16 (weights
    for sampling: half the file, and `load_groups` casts them back)."""
    arrays = {f"{group}/{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    return {k: v.astype(np.float16) if half and v.dtype == np.float32 else v for k, v in arrays.items()}


def save_arrays(path, arrays):
    """Write `arrays` to `path` atomically (`files.write_atomic`: temporary file in the same folder, fsync, rename)."""
    slow = float(os.environ.get(SLOW_ENV) or 0)

    def write(fh):
        if slow <= 0:
            np.savez(fh, **arrays)
            return
        buffer = io.BytesIO()  # test hook: half the bytes, a pause, the rest, a pause before the rename
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(slow / 2)
        fh.write(data[len(data) // 2:])
        fh.flush()
        time.sleep(slow / 2)

    return files.write_atomic(path, write)


def read_arrays(path):
    """Every array of an .npz file, read into memory ({name: array}); loading runs no code.
    A missing, empty, truncated or otherwise damaged file raises `CorruptCheckpointError`."""
    path = pathlib.Path(path)
    try:
        if path.stat().st_size == 0:
            raise CorruptCheckpointError(path, "empty file, 0 bytes")
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise CorruptCheckpointError(path, "not an .npz archive")
            return {name: np.array(archive[name]) for name in archive.files}  # reads (and CRC-checks) every member
    except CorruptCheckpointError:
        raise
    except Exception as err:  # zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error, ...
        raise CorruptCheckpointError(path, f"{type(err).__name__}: {err}") from None


def check_group(variables, arrays, group, path):
    """Arrays `<group>/NNNN` of `arrays` (a dict or an open npz), checked against `variables` (count and
    shapes) and cast to their dtypes -> list of arrays. Raises `CorruptCheckpointError`; assigns nothing."""
    names = arrays.files if hasattr(arrays, "files") else list(arrays)
    keys = sorted(k for k in names if k.startswith(group + "/"))
    if len(keys) != len(variables):
        raise CorruptCheckpointError(path, f"{len(keys)} arrays for '{group}' but the model has {len(variables)}; config and checkpoint disagree")
    values = []
    for key, var in zip(keys, variables):
        value = np.asarray(arrays[key])
        if tuple(value.shape) != tuple(var.shape):
            raise CorruptCheckpointError(path, f"{key} has shape {value.shape}, model expects {tuple(var.shape)}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise CorruptCheckpointError(path, f"{key} holds NaN or infinite values (weights of a diverged or damaged run)")
        try:
            values.append(value.astype(var.dtype))  # int64 (TF) and int32/uint32 (JAX) counters and seeds
        except (TypeError, ValueError) as err:
            raise CorruptCheckpointError(path, f"{key} of dtype {value.dtype} does not fit {var.dtype}: {err}") from None
    return values


def assign_group(variables, archive, group, path):
    """Assign arrays `<group>/NNNN` of an open npz (or dict) to `variables`: all checked first, then assigned."""
    for var, value in zip(variables, check_group(variables, archive, group, path)):
        var.assign(value)


def load_groups(path, groups, arrays=None, optional=("rng",)):
    """Restore {group: variables} from the .npz at `path` (or its already-read `arrays`), all or nothing:
    every group is checked before the first variable is assigned. Groups in `optional` may be absent
    (`rng`: written before the seed generator was checkpointed). Returns the arrays."""
    arrays = read_arrays(path) if arrays is None else arrays
    plan = []
    for group, variables in groups.items():
        if group in optional and not any(k.startswith(group + "/") for k in arrays):
            continue
        plan.append((variables, check_group(variables, arrays, group, path)))
    for variables, values in plan:
        for var, value in zip(variables, values):
            var.assign(value)
    return arrays


def load_state(path, groups, optional=("rng",)):
    """Restore a training checkpoint (`GAN.save_checkpoint`'s groups; those in `optional` may be absent)
    all or nothing -> its epoch."""
    arrays = read_arrays(path)
    if "epoch" not in arrays or arrays["epoch"].shape != () or arrays["epoch"].dtype.kind not in "iu":
        raise CorruptCheckpointError(path, "no integer 'epoch' array")
    load_groups(path, groups, arrays, optional)
    return int(arrays["epoch"])


def load_newest(run_dir, load):
    """Call `load(path)` on the numbered checkpoints of `run_dir`, newest first, until one succeeds
    -> (path, result, [skipped paths]). Each file that raises `CorruptCheckpointError` is skipped with
    a `CorruptCheckpointWarning`; `load` must assign nothing when it raises (see `load_groups`)."""
    run_dir = pathlib.Path(run_dir)
    found = numbered(run_dir)
    if not found:
        raise FileNotFoundError(f"no checkpoint-*.npz in {run_dir} (has training saved one yet?)")
    skipped = []
    for path in reversed(found):
        try:
            return path, load(path), skipped
        except CorruptCheckpointError as err:
            warnings.warn(f"skipping checkpoint {path}: cannot be loaded ({err.reason}); trying the previous one", CorruptCheckpointWarning, stacklevel=2)
            skipped.append(path)
    raise CorruptCheckpointError(
        run_dir, f"none of its {len(found)} checkpoint-*.npz files loads",
        "they are damaged or do not fit its config.json: start a new run folder (or restore a checkpoint from a backup)",
    )


def set_aside(path):
    """Rename a damaged checkpoint to `<name>.corrupt` (kept for inspection, no longer a checkpoint) -> new path."""
    path = pathlib.Path(path)
    target = path.with_name(path.name + ".corrupt")
    os.replace(path, target)
    return target


def remove_temp_files(run_dir):
    """Delete the temporary files of interrupted checkpoint writes in `run_dir` -> their paths.
    Only while nothing else writes to the folder (resume)."""
    removed = []
    for tmp in pathlib.Path(run_dir).glob(TEMP_GLOB):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def numbered(run_dir):
    """`checkpoint-NNNNNN.npz` files of a run folder, oldest first (never temporary or set-aside files)."""
    return sorted(p for p in pathlib.Path(run_dir).glob("checkpoint-*.npz") if CHECKPOINT_RE.fullmatch(p.name) and p.is_file())


def epoch_of(path):
    return int(CHECKPOINT_RE.search(pathlib.Path(path).name).group(1))


def latest_checkpoint(run_dir):
    """Path of the highest-epoch `checkpoint-NNNNNN.npz` in `run_dir`, or None."""
    found = numbered(run_dir)
    return found[-1] if found else None


def rollback_target(run_dir, last_good_epoch):
    """Newest `checkpoint-NNNNNN.npz` saved at or before `last_good_epoch` (else the oldest one kept)."""
    found = numbered(run_dir)
    if not found:
        raise FileNotFoundError(f"the divergence guard found no checkpoint in {run_dir} to roll back to")
    good = [p for p in found if epoch_of(p) <= last_good_epoch]
    return good[-1] if good else found[0]


def checkpoint_file(run_dir, checkpoint="latest"):
    """Path of a run's checkpoint: "latest", "best", an epoch number, or a file path."""
    run_dir = pathlib.Path(run_dir)
    if checkpoint == "latest":
        file = latest_checkpoint(run_dir)
    elif checkpoint == "best":
        file = run_dir / "checkpoint-best.npz"
    elif isinstance(checkpoint, int) or str(checkpoint).isdigit():
        file = run_dir / f"checkpoint-{int(checkpoint):06d}.npz"
    else:
        file = pathlib.Path(checkpoint)
    if file is None or not file.is_file():
        raise FileNotFoundError(f"no checkpoint {checkpoint!r} in {run_dir} (has training saved one yet?)")
    return file


def weights_digest(model):
    """SHA-256 of a model's weight values (float32 little-endian, with shapes, in layer order): its identity.

    Unlike a file's digest (HDF5 stores write times, npz zip dates), it is the same for every copy and
    reproduction of the same weights; caches beside a model and sample folders record it."""
    digest = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w, dtype="<f4")
        digest.update(str(w.shape).encode())
        digest.update(w.tobytes())
    return digest.hexdigest()
