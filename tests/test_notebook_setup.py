"""Every notebook opens with the same setup cell, written from the one repository address in pyproject.toml."""
import importlib.util
import json
import pathlib
import sys

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
        assert setup == tool.setup_cell(widget=tool.HAND_MADE.get(path.name, False)), path.name
        assert f"colab.research.google.com/github/{tool.REPO}/blob/main/notebooks/{path.name}" in "".join(cells[0]["source"])
        others = "".join("".join(c["source"]) for c in cells[1:] if c is not cells[0])
        assert others.count(url) == setup.count(url), f"{path.name} writes the repository address outside its setup cell"


def test_setup_starts_the_backend_and_reads_the_smoke_flag(monkeypatch):
    from covgan_utils.util import notebook

    monkeypatch.setenv("COVGAN_SMOKE", "1")
    assert notebook.setup() is True and "keras" in sys.modules
    monkeypatch.setenv("COVGAN_SMOKE", "0")
    assert notebook.setup() is False
