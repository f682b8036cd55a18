"""The house by job: subpackages in layers, imports only downwards, one place for function-level imports,
and sampling and the metrics usable without the training loop."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "covgan_utils"
# Subpackages and top-level modules by layer, lowest first: a unit imports only from lower layers.
LAYERS = (
    ("util",),  # paths, atomic files, console, hardware, per-backend compilation, notebook setup
    ("data", "nets", "checkpoints"),  # scans, split, follow-ups; network families; arrays of a run
    ("config", "sampling"),  # the recipe (its split is the data's); the image of a seed
    ("runs", "metrics"),  # run folders and the release; quality metrics, feature networks, reports
    ("training",),  # losses, augmentation, per-backend step, GAN, callbacks, loop
    ("inversion", "plots"),  # projection, inversion encoder, disease direction; figures of a run
    ("widget",),  # autoencoder, TF.js export, server
    ("studies", "bench"),  # ablation, GPU job, progression report; the training-step benchmark
    ("cli",),
    ("__main__",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(module):
    """covgan_utils.a.b -> a (the subpackage or top-level module)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_of(file):
    rel = file.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def _imports(file):
    """[(imported covgan_utils module, is_top_level)] of one file."""
    tree = ast.parse(file.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("covgan_utils"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "covgan_utils" else [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("covgan_utils")]
        else:
            continue
        found += [(name, id(node) in top) for name in names]
    return found


FILES = sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_unit_has_a_layer():
    units = {_unit(_module_of(f)) for f in FILES} - {"__init__"}
    assert units == set(RANK), f"place new subpackages or modules in LAYERS: {sorted(units ^ set(RANK))}"


def test_units_import_only_downwards():
    upward = []
    for file in FILES:
        me = _unit(_module_of(file))
        for name, _ in _imports(file):
            dep = _unit(name)
            if dep != me and RANK[dep] >= RANK.get(me, -1):
                upward.append((_module_of(file), name))
    assert upward == [], f"imports that do not go down a layer: {upward}"


def test_function_level_imports_only_in_the_cli():
    inner = [(_module_of(f), name) for f in FILES for name, top in _imports(f) if not top and _unit(_module_of(f)) != "cli"]
    assert inner == [], f"a function-level import dodges a cycle: move the code to its layer instead: {inner}"


def test_no_cycles_among_the_modules_of_a_unit():
    graph = {}
    for file in FILES:
        me = _module_of(file)
        graph[me] = {n for n, _ in _imports(file) if _unit(n) == _unit(me) and n != me and n in {_module_of(f) for f in FILES}}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def _loaded_after_import(module):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    code = f"import sys, {module}\nprint(sorted(m for m in sys.modules if m.startswith('covgan_utils')))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["covgan_utils.sampling", "covgan_utils.runs"])
def test_loading_and_sampling_import_nothing_of_training(module):
    loaded = _loaded_after_import(module)
    assert [m for m in loaded if m.startswith(("covgan_utils.training", "covgan_utils.metrics"))] == []


def test_the_metrics_import_nothing_of_training():
    modules = sorted(f"covgan_utils.metrics.{p.stem}" for p in (PACKAGE / "metrics").glob("*.py") if p.stem != "__init__")
    loaded = _loaded_after_import(", ".join(modules))
    assert [m for m in loaded if m.startswith(("covgan_utils.training", "covgan_utils.runs"))] == []
