"""Small file helpers with no project dependencies."""
import os
import pathlib


def write_text_atomic(path, text):
    """Replace `path` with `text` so that a reader (or a kill) sees the old file or the new one, never half of one."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
