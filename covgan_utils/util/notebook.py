"""The setup step every notebook runs after fetching the project (the cell is written by tools/make_notebooks.py)."""
import os
import subprocess
import sys

from covgan_utils.util import console, paths


def setup(widget=False, verbose=False):
    """Start Keras and its backend quietly (no TensorFlow/CUDA start-up lines in the outputs) and, on Colab
    with `widget=True`, build the widget's converter environment and JS libraries. Returns SMOKE:
    whether $COVGAN_SMOKE=1 asks for the tiny CI settings."""
    if widget and "google.colab" in sys.modules:
        subprocess.run(["make", ".venv-tfjs/.installed", "widget/node_modules/.installed"], cwd=paths.PROJECT_ROOT, check=False)
    console.start_backend_quietly(verbose)
    return os.environ.get("COVGAN_SMOKE") == "1"
