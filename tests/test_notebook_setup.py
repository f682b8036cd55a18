"""Every notebook opens with the same setup cell, written from the one repository address in pyproject.toml;
`notebook.setup()` starts the backend and keeps its log lines and warnings out of cell outputs."""
import importlib.util
import json
import logging
import pathlib
import subprocess
import sys
import warnings

import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _make_notebooks():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_has_the_shared_setup_cell_and_badge():
    tool = _make_notebooks()
    url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    assert tool.REPO_URL == url
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) == 6
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        setup = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert setup == tool.setup_cell(widget=path.name in tool.WIDGET_NOTEBOOKS), path.name
        assert "from covgan_utils.util import notebook" in setup  # the module works from a Colab clone and from notebooks/
        assert f"colab.research.google.com/github/{tool.REPO}/blob/main/notebooks/{path.name}" in "".join(cells[0]["source"])
        others = "".join("".join(c["source"]) for c in cells[1:] if c is not cells[0])
        assert others.count(url) == setup.count(url), f"{path.name} writes the repository address outside its setup cell"


def test_setup_starts_the_backend_and_reads_the_smoke_flag(monkeypatch):
    from covgan_utils.util import notebook

    monkeypatch.setenv("COVGAN_SMOKE", "1")
    assert notebook.setup() is True and "keras" in sys.modules
    monkeypatch.setenv("COVGAN_SMOKE", "0")
    assert notebook.setup() is False


def test_setup_quiets_the_backends_python_logs_and_warnings():
    from covgan_utils.util import notebook

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notebook.quiet_python_logs()
        for module in ("keras.src.trainers.trainer", "tensorflow.python.eager.polymorphic_function", "covgan_utils.data.dataset"):
            warnings.warn_explicit(f"from {module}", UserWarning, "x.py", 1, module=module)
    assert [str(w.message) for w in caught] == ["from covgan_utils.data.dataset"]  # the project's own warnings still show
    assert logging.getLogger("tensorflow").getEffectiveLevel() == logging.ERROR  # tf.get_logger(): no "INFO:...Assets written", no retracing warnings
    assert not notebook.in_kernel()  # so pytest's own capture of file descriptor 2 is left alone


def test_native_log_filter_drops_backend_log_lines_and_passes_the_rest():
    script = """
import os, threading
from covgan_utils.util import notebook
original = notebook.filter_native_logs()
for line in (b"E0000 00:00:1796324983.740723   22986 meta_optimizer.cc:967] remapper failed: INVALID_ARGUMENT: x\\n",
             b"2025-01-01 12:00:00.000001: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary\\n",
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n",
             b"a line of our own\\n", b"F0000 00:00:1.5 7 check.cc:1] a fatal check\\n"):
    os.write(2, line)
reader = next(t for t in threading.enumerate() if t.name == "covgan-native-log-filter")  # found while it runs
os.dup2(original, 2)  # closes the filter's pipe: it drains and ends
reader.join(10)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["a line of our own", "F0000 00:00:1.5 7 check.cc:1] a fatal check"]
