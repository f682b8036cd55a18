"""Keeping TensorFlow/XLA/CUDA start-up noise off the terminal and out of notebook outputs.

Those messages come from C++ code at import time and on first use of a device, past Python's
`sys.stderr`; `quiet_stderr` sends file descriptor 2 to /dev/null for a block, and
`start_backend_quietly` imports Keras (and with it the backend) inside one, with
`TF_CPP_MIN_LOG_LEVEL=3` for what TensorFlow logs later. TensorFlow 2.16+ logs much of that through
absl's C++ logging, which ignores the variable (`E0000 ... meta_optimizer.cc:967] remapper failed: ...`
from the graph optimiser on the first training step): `quiet_absl_logs` gives absl the same level.
`verbose=True` leaves everything visible.
"""
import contextlib
import ctypes
import glob
import importlib
import mmap
import os
import re
import sys
import threading

_LOCK = threading.RLock()  # file descriptor 2 is process-wide: one redirect at a time


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for the block (Python exceptions still propagate): C++ start-up
    logs of TensorFlow/XLA/CUDA, or libpng's and libjpeg's own messages while OpenCV decodes."""
    with _LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no file descriptor 2: nothing to silence
            yield
            return
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def quiet_import(module, verbose=False):
    """`importlib.import_module(module)`, with the backend's start-up messages hidden unless `verbose`."""
    if verbose:
        return importlib.import_module(module)
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with quiet_stderr():
        return importlib.import_module(module)


def start_backend_quietly(verbose=False):
    """Import Keras and its backend now, quietly (notebooks call this once, in their setup cell)."""
    keras = quiet_import("keras", verbose)
    if not verbose:
        quiet_absl_logs()
    return keras


ABSL_SET_MIN_LOG_LEVEL = re.compile(rb"_ZN4absl\d+lts_\d+14SetMinLogLevelENS0_18LogSeverityAtLeastE")  # absl::SetMinLogLevel, any LTS


def min_log_level():
    """TF_CPP_MIN_LOG_LEVEL as absl's severity: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL only (unset or unreadable: 3)."""
    try:
        return min(max(int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")), 0), 3)
    except ValueError:
        return 3


def tensorflow_framework():
    """Path of the loaded TensorFlow's framework library (it exports absl's logging), or None."""
    folder = os.path.dirname(getattr(sys.modules.get("tensorflow"), "__file__", None) or "")
    found = sorted(glob.glob(os.path.join(folder, "libtensorflow_framework*"))) if folder else []
    return found[0] if found else None


def quiet_absl_logs(level=None):
    """Give absl's C++ logging in the loaded TensorFlow the minimum severity `level` (default: from
    TF_CPP_MIN_LOG_LEVEL, see `min_log_level`; FATAL lines always show). Returns the level set, or None
    where TensorFlow is not loaded (JAX) or its library exports no absl::SetMinLogLevel."""
    setter = _absl_set_min_log_level(tensorflow_framework())
    if setter is None:
        return None
    level = min_log_level() if level is None else level
    setter(level)
    return level


def _absl_set_min_log_level(library):
    """absl::SetMinLogLevel(int) of a native library, found by its mangled name, or None (a cosmetic step never fails a command)."""
    try:
        with open(library, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as image:
            found = ABSL_SET_MIN_LOG_LEVEL.search(image)
            symbol = bytes(found.group(0)).decode() if found else None
        setter = getattr(ctypes.CDLL(library), symbol)
    except (TypeError, OSError, ValueError, AttributeError):  # no library, unreadable, or no such symbol
        return None
    setter.argtypes, setter.restype = [ctypes.c_int], None
    return setter
