"""The notebooks explain and check themselves: more prose than code, the package's public API only, assertions
in their cells, every one run by `make demo`, and all of them written by tools/make_notebooks.py with outputs
stripped."""
import ast
import fnmatch
import importlib.util
import json
import pathlib
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "covgan_utils"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def _code_trees(path):
    return [ast.parse(_source(c)) for c in _cells(path) if c["cell_type"] == "code"]


def _module_file(module):
    """The source file of a covgan_utils module (or package), or None when `module` names no module."""
    base = ROOT.joinpath(*module.split("."))
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if file.is_file():
            return file
    return None


def _own_names(module):
    """Names a module defines at top level (functions, classes, assignments); names it imports are not its API."""
    names = set()
    for node in ast.parse(_module_file(module).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _check_member(module, name):
    """Why `module.name` is not public API of the package, or None when it is."""
    if name.startswith("_"):
        return f"{module}.{name} is private"
    if _module_file(f"{module}.{name}") is not None:
        return None
    if name not in _own_names(module):
        return f"{module}.{name} is not defined in {module} (it only imports it): use the module that defines it"
    return None


def api_misuses(tree):
    """Uses of covgan_utils in one code cell that go past its public API: private names, and names a module only
    imports (`runs.paths`); -> list of messages."""
    modules, problems = {}, []  # local name -> covgan_utils module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    parts = alias.name.split(".")
                    problems += [p for i in range(1, len(parts)) if (p := _check_member(".".join(parts[:i]), parts[i]))]
                    modules[alias.asname or PACKAGE] = alias.name if alias.asname else PACKAGE
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            for alias in node.names:
                problem = _check_member(node.module, alias.name)
                if problem:
                    problems.append(problem)
                elif _module_file(f"{node.module}.{alias.name}") is not None:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def resolve(node):  # the covgan_utils module an expression names, or None
        if isinstance(node, ast.Name):
            return modules.get(node.id)
        if isinstance(node, ast.Attribute) and (parent := resolve(node.value)) and _module_file(f"{parent}.{node.attr}"):
            return f"{parent}.{node.attr}"
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (module := resolve(node.value)):
            problems += [p for p in [_check_member(module, node.attr)] if p]
    return problems


def _demo_notebooks():
    """Notebook names (or patterns) on the recipe lines of the Makefile's `demo` target."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("demo:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    text = " ".join(recipe)
    assert "nbconvert" in text and "--execute" in text, "make demo no longer executes the notebooks with nbconvert"
    return [pathlib.PurePath(token).name for token in shlex.split(text.replace(";", " ")) if token.endswith(".ipynb")]


def _tool():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_six_notebooks():
    assert [p.name for p in NOTEBOOKS] == [f"0{i}_{n}.ipynb" for i, n in enumerate(("data", "train", "interpolate", "latent_widget", "evaluate", "progression"))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_more_markdown_than_code(path):
    chars = {"markdown": 0, "code": 0}
    for cell in _cells(path):
        chars[cell["cell_type"]] = chars.get(cell["cell_type"], 0) + len(_source(cell))
    assert chars["markdown"] > chars["code"], f"{path.name}: {chars['markdown']} characters of markdown, {chars['code']} of code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_uses_the_public_api_only(path):
    problems = [p for tree in _code_trees(path) for p in api_misuses(tree)]
    assert problems == [], f"{path.name}: {problems}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_asserts_its_outputs(path):
    asserts = sum(isinstance(node, ast.Assert) for tree in _code_trees(path) for node in ast.walk(tree))
    assert asserts >= 1, f"{path.name} has no assert: nbval would pass it whatever its cells produce"


def test_make_demo_runs_every_notebook():
    listed = _demo_notebooks()
    missing = [p.name for p in NOTEBOOKS if not any(fnmatch.fnmatch(p.name, pattern) for pattern in listed)]
    assert missing == [], f"make demo does not run {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_the_tools_output_stripped(path):
    built = _tool().build(path.name)
    cells = _cells(path)
    assert [(c["cell_type"], _source(c)) for c in cells] == [(c.cell_type, c.source) for c in built.cells], (
        f"{path.name} differs from tools/make_notebooks.py: edit the tool and run it")
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in cells if c["cell_type"] == "code"), (
        f"{path.name} is committed with outputs: run `make strip`")


@pytest.mark.parametrize("source, expected", [
    ("from covgan_utils import runs\nruns.latest_run()", []),
    ("from covgan_utils.data import dataset\ndataset.load_split()", []),
    ("from covgan_utils import runs\nruns._find('x', None)", ["covgan_utils.runs._find is private"]),
    ("from covgan_utils.data import dataset\ndataset._with_flips(ds)", ["covgan_utils.data.dataset._with_flips is private"]),
    ("from covgan_utils import runs\nruns.paths.PROJECT_ROOT", ["not defined in covgan_utils.runs"]),
    ("from covgan_utils.runs import _find", ["covgan_utils.runs._find is private"]),
    ("import covgan_utils.runs\ncovgan_utils.runs._find('x', None)", ["covgan_utils.runs._find is private"]),
    ("import covgan_utils.data.dataset as d\nd.describe(x)", []),
])
def test_the_api_check_tells_public_from_private(source, expected):
    problems = api_misuses(ast.parse(source))
    assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems)), problems
