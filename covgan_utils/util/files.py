"""Small file helpers with no project dependencies."""
import json
import os
import pathlib


def write_atomic(path, write, mode="wb"):
    """Replace `path` with what `write(file_handle)` writes, so that a reader (or a kill) sees the old file
    or the new one, never half of one: a temporary `.<name>.<pid>.tmp` in the same folder, fsync, rename."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path, text):
    """`write_atomic` for a text file."""
    return write_atomic(path, lambda fh: fh.write(text), mode="w")


def _fsync_dir(folder):
    """Make a rename in `folder` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json(path, fix):
    """The JSON object in `path`; a missing, unreadable or non-object file raises one line naming it and `fix`."""
    path = pathlib.Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not valid JSON ({' '.join(str(err).split())}); {fix}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(value).__name__}; {fix}")
    return value


def append_jsonl(file, record):
    with open(file, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(file):
    lines = pathlib.Path(file).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
