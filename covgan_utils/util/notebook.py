"""The setup step every notebook runs after fetching the project (the cell is written by tools/make_notebooks.py).

`setup()` keeps the backends' noise out of cell outputs while leaving the project's own messages visible:

- TensorFlow/XLA/CUDA start-up messages: Keras is imported with file descriptor 2 silenced
  (`console.start_backend_quietly`);
- C++ log lines written later to file descriptor 2, which TF_CPP_MIN_LOG_LEVEL does not reach (absl's
  `E0000 ... remapper failed: ...` from the graph optimiser, `I0000`/`W0000` lines, TF's dated
  `... I tensorflow/...` lines): in a notebook kernel, fd 2 is routed through a filter that drops them and
  passes every other line on (`filter_native_logs`);
- Python loggers of TensorFlow and absl below ERROR (`INFO:tensorflow:Assets written to ...`, tf.function
  retracing warnings, AutoGraph notes);
- Python warnings raised inside the backends (keras, tensorflow, jax, absl). Warnings of covgan_utils
  (SkippedFilesWarning, CorruptCheckpointWarning) still show.
"""
import logging
import os
import re
import subprocess
import sys
import threading
import warnings

from covgan_utils.util import console, paths

NOISY_LOGGERS = ("tensorflow", "absl")  # Python loggers set to ERROR
NOISY_WARNING_MODULES = r"(keras|tensorflow|tf_keras|jax|jaxlib|absl|google\.protobuf)(\.|$)"  # warnings raised there are hidden
NATIVE_LOG_LINE = re.compile(
    rb"^([IWE]\d{4} [\d:.]+ +\d+ [^\]\s]+:\d+\] "  # absl: E0000 00:00:1796324983.740723  22986 meta_optimizer.cc:967] ...
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "  # TensorFlow: 2025-01-01 12:00:00.000000: I tensorflow/...
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
_filter = {}  # "fd": the file descriptor the filter passes lines on to, once installed


def setup(widget=False, verbose=False):
    """Start Keras and its backend quietly and keep the backends' log lines and warnings out of cell outputs
    (everything stays visible with `verbose=True`); on Colab with `widget=True`, build the widget's converter
    environment and JS libraries. Returns SMOKE: whether $COVGAN_SMOKE=1 asks for the tiny CI settings."""
    if widget and "google.colab" in sys.modules:
        subprocess.run(["make", ".venv-tfjs/.installed", "widget/node_modules/.installed"], cwd=paths.PROJECT_ROOT, check=False)
    console.start_backend_quietly(verbose)
    if not verbose:
        quiet_python_logs()
        if in_kernel():  # a notebook kernel forwards fd 2 into the cell outputs
            filter_native_logs()
    return os.environ.get("COVGAN_SMOKE") == "1"


def in_kernel():
    """Whether this code runs in a Jupyter kernel (not a terminal IPython, a script or pytest)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


def quiet_python_logs():
    """TensorFlow's and absl's Python loggers to ERROR (tf.get_logger() is the "tensorflow" logger), and
    warnings raised inside the backends ignored."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # JAX-only installs have no absl
        pass
    else:
        absl_logging.set_verbosity(absl_logging.ERROR)
    warnings.filterwarnings("ignore", module=NOISY_WARNING_MODULES)


def filter_native_logs():
    """Route file descriptor 2 through a daemon thread that drops C++ log lines of TensorFlow/XLA/absl
    (`NATIVE_LOG_LINE`) and writes every other line to where fd 2 pointed before. Installed once per process;
    returns that original file descriptor."""
    if "fd" in _filter:
        return _filter["fd"]
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            for line in iter_lines(pipe):
                if not NATIVE_LOG_LINE.match(line):
                    os.write(original, line)

    threading.Thread(target=pump, name="covgan-native-log-filter", daemon=True).start()
    _filter["fd"] = original
    return original


def iter_lines(pipe, size=65536):
    """Lines of a raw byte stream as they arrive (a final line without newline included)."""
    pending = b""
    while chunk := pipe.read(size):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending
