"""Keeping TensorFlow/XLA/CUDA start-up noise off the terminal and out of notebook outputs.

Those messages come from C++ code at import time and on first use of a device, past Python's
`sys.stderr`; `quiet_stderr` sends file descriptor 2 to /dev/null for a block, and
`start_backend_quietly` imports Keras (and with it the backend) inside one, with
`TF_CPP_MIN_LOG_LEVEL=3` for what TensorFlow logs later. `verbose=True` leaves everything visible.
"""
import contextlib
import importlib
import os
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
    return quiet_import("keras", verbose)
