"""The `points.json` format of the latent widget, defined once: its version, its fields and their types and shapes.

The export builds the file with `build()` (which validates it), `widget serve` and the tests read it back
with `validate()`, the page gets `page_contract()` (the versions it reads, the blocks it needs) from the
export, and docs/WIDGET.md quotes `markdown()` between two markers (`python -m covgan_utils.widget.schema`
rewrites that section; a test keeps it equal).

A shape names its sizes: every field that uses `n_real` must have the same length, and so on. Sizes of a
list of objects (`progressions[]`) are counted per object.
"""
import dataclasses
import json
import math
import pathlib

from covgan_utils.util import paths

DEFAULT_OUT = paths.EXPORTS_DIR / "latent_widget"  # where `widget export` writes and `widget serve` serves

VERSION = 2
READS = (1, 2)  # version 1 (written before the projection overlays) has no optional blocks; the page draws both
FILE = "points.json"
BEGIN, END = "<!-- points.json schema: begin (python -m covgan_utils.widget.schema) -->", "<!-- points.json schema: end -->"

KINDS = {  # kind -> (python check, words for an error)
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "int|null": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "a whole number or null"),
    "str|null": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "object|null": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One field: dotted name (`a.b`; `a[].b` inside a list of objects), kind, shape, meaning."""

    name: str
    kind: str
    shape: tuple = ()  # () one value; ("n_real", 2): a list of n_real lists of 2
    meaning: str = ""
    choices: tuple = ()
    optional: bool = False  # top-level blocks the file may leave out

    @property
    def parent(self):
        return self.name.rpartition(".")[0]

    @property
    def key(self):
        return self.name.rpartition(".")[2].removesuffix("[]")


_F = Field
FIELDS = (
    _F("version", "int", (), f"format version, {VERSION}"),
    _F("image_size", "int", (), "side of the decoded square image in pixels (128)"),
    _F("classes", "str", ("n_classes",), "class names; `real.cls` indexes them"),
    _F("bounds", "float", (4,), "x0, x1, y0, y1 of the drawn latent map"),
    _F("real", "object", (), "the real scans, one entry per scan"),
    _F("real.z", "float", ("n_real", 2), "2-D latent point"),
    _F("real.cls", "int", ("n_real",), "index into `classes`"),
    _F("real.file", "str", ("n_real",), "file name"),
    _F("real.split", "str", ("n_real",), "side of the patient split", ("train", "val")),
    _F("generated", "object", (), "GAN samples"),
    _F("generated.z", "float", ("n_generated", 2), "2-D latent point"),
    _F("generated.source", "str", (), "the GAN run they came from, `images` for an array, empty for none"),
    _F("thumbs", "object", (), "the thumbnail sprite"),
    _F("thumbs.file", "str", (), "sprite file next to points.json (thumbs.png)"),
    _F("thumbs.size", "int", (), "side of one thumbnail in pixels"),
    _F("thumbs.cols", "int", (), "thumbnails per sprite row"),
    _F("thumbs.generated_offset", "int", (), "sprite index of the first generated scan (real scans come first)"),
    _F("autoencoder", "object", (), "the autoencoder whose decoder is in model/"),
    _F("autoencoder.run", "str", (), "its run folder's name"),
    _F("autoencoder.widths", "int", ("n_layers",), "encoder Dense widths, latent included"),
    _F("autoencoder.epochs", "int", (), "training epochs"),
    _F("autoencoder.metrics", "object|null", (), "its metrics.json, or null"),
    _F("projected", "object", (), "validation scans projected into a GAN generator", optional=True),
    _F("projected.z", "float", ("n_projected", 2), "2-D point of the generator's reconstruction"),
    _F("projected.real", "int", ("n_projected",), "index of the real scan it reconstructs"),
    _F("projected.loss", "float", ("n_projected",), "projection loss"),
    _F("projected.thumb_offset", "int", (), "sprite index of the first reconstruction"),
    _F("progressions", "object", ("n_progressions",), "walks between two projected scans", optional=True),
    _F("progressions[].name", "str", (), "label, `A → B`"),
    _F("progressions[].inputs", "str", (2,), "file names of A and B"),
    _F("progressions[].input_real", "int|null", (2,), "their indices among the real scans, null for a file"),
    _F("progressions[].input_z", "float", (2, 2), "2-D points of A and B"),
    _F("progressions[].input_thumbs", "int", (2,), "sprite indices of A and B"),
    _F("progressions[].z", "float", ("n_steps", 2), "2-D polyline of the decoded frames, both projections included"),
    _F("progressions[].thumbs", "int", ("n_steps",), "sprite index of each frame"),
    _F("progressions[].mode", "str", (), "path between the two latents", ("linear", "slerp")),
    _F("projection", "object", (), "how the projections were made", optional=True),
    _F("projection.generator", "str", (), "the generator: `release`, a run folder's name or a model's name"),
    _F("projection.space", "str", (), "its latent space: `z`, or `w+` for a style-based generator"),
    _F("projection.steps", "int", (), "optimisation steps per projection"),
    _F("projection.starts", "int", (), "seeded starts per projection"),
    _F("projection.features", "str|null", (), "feature network of the projection loss, null for pixels only"),
    _F("projection.seed", "int", (), "seed of the starts"),
)
BY_NAME = {f.name: f for f in FIELDS}


def top_level(required_only=False):
    """Names of the top-level fields, in file order."""
    return [f.name for f in FIELDS if not f.parent and not (required_only and f.optional)]


def _children(parent):
    return [f for f in FIELDS if f.parent == parent]


# ---------------------------------------------------------------- validation

def validate(points, source=FILE):
    """Check a points.json object against the schema; raises a one-line ValueError naming the field."""
    if not isinstance(points, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(points).__name__}")
    version = points.get("version")
    if version not in READS:
        raise ValueError(f"{source}: field 'version' is {json.dumps(version)}, this code reads version {' or '.join(map(str, READS))}")
    sizes = {}
    _check_object(points, "", source, sizes)
    if version == 1 and any(name in points for name in top_level() if BY_NAME[name].optional):
        raise ValueError(f"{source}: version 1 has no projection blocks; write version {VERSION}")
    _check_values(points, source)
    return points


def _check_object(blob, parent, source, sizes, shown=None):
    """The fields under `parent` (`a`, or `a[]` for each object of a list); `shown` names them in errors."""
    fields = _children(parent)
    known = {f.key for f in fields}
    label = shown or parent
    for key in blob:
        if key not in known:
            raise ValueError(f"{source}: unknown field {f'{label}.{key}' if label else key!r}; the format ({__name__}) has no such field")
    for field in fields:
        name = f"{label}.{field.key}" if label else field.name
        if field.key not in blob:
            if field.optional:
                continue
            raise ValueError(f"{source}: field {name!r} is missing")
        value = blob[field.key]
        if field.kind == "object" and field.shape:  # a list of objects; sizes are counted per object
            _check_shape(value, field, name, source, sizes, leaf=(lambda v: isinstance(v, dict), "an object"))
            for i, item in enumerate(value):
                _check_object(item, field.name + "[]", source, {}, shown=f"{name}[{i}]")
        elif field.kind == "object":
            if not isinstance(value, dict):
                raise ValueError(f"{source}: field {name!r} must be an object, got {_shown(value)}")
            _check_object(value, field.name, source, sizes, shown=name)
        else:
            _check_shape(value, field, name, source, sizes)


def _check_shape(value, field, name, source, sizes, leaf=None):
    """`value` has the field's shape (sizes by name agree across fields) and kind at every leaf."""
    check, words = leaf or KINDS[field.kind]

    def walk(v, dims, path):
        if not dims:
            if not check(v):
                raise ValueError(f"{source}: field {name + path!r} must be {words}, got {_shown(v)}")
            if field.choices and v not in field.choices:
                raise ValueError(f"{source}: field {name + path!r} must be one of {', '.join(field.choices)}, got {_shown(v)}")
            return
        dim, rest = dims[0], dims[1:]
        if not isinstance(v, list):
            raise ValueError(f"{source}: field {name + path!r} must be a list ({_shape_text(field.shape)}), got {_shown(v)}")
        expected = dim if isinstance(dim, int) else sizes.setdefault(dim, len(v))
        if len(v) != expected:
            told = f"{dim}={expected} items, like the other fields of size {dim}" if isinstance(dim, str) else f"{dim} items"
            raise ValueError(f"{source}: field {name + path!r} must have {told}, got {len(v)}")
        for i, item in enumerate(v):
            walk(item, rest, f"{path}[{i}]")

    walk(value, field.shape, "")


def _check_values(points, source):
    """The cross-field rules: class and real-scan indices in range."""
    n_classes, n_real = len(points["classes"]), len(points["real"]["z"])
    bad = [c for c in points["real"]["cls"] if not 0 <= c < n_classes]
    if bad:
        raise ValueError(f"{source}: field 'real.cls' holds {bad[0]}, not an index into the {n_classes} classes")
    indices = list(points.get("projected", {}).get("real", []))
    indices += [i for p in points.get("progressions", []) for i in p["input_real"] if i is not None]
    bad = [i for i in indices if not 0 <= i < n_real]
    if bad:
        raise ValueError(f"{source}: real scan index {bad[0]} (in 'projected.real' or 'progressions[].input_real') is out of range: there are {n_real} real scans")


def _shown(value, limit=40):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- building

def build(**blocks):
    """A points.json object of the current version from its top-level blocks (in file order), validated."""
    unknown = set(blocks) - set(top_level())
    if unknown:
        raise ValueError(f"unknown points.json block(s) {sorted(unknown)}; the format ({__name__}) has {', '.join(top_level())}")
    points = {"version": VERSION}
    points.update((name, blocks[name]) for name in top_level() if name in blocks and name != "version")
    return validate(points)


def dumps(points):
    """The compact JSON text of a validated points.json object (NaN and infinities refused)."""
    return json.dumps(validate(points), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def page_contract():
    """What the page checks before drawing: the versions it reads and the blocks it needs."""
    return {"versions": list(READS), "required": top_level(required_only=True), "file": FILE}


# ---------------------------------------------------------------- documentation

def _shape_text(shape):
    return "[" + ", ".join(map(str, shape)) + "]" if shape else "one value"


def markdown():
    """The schema as a Markdown table (quoted in docs/WIDGET.md)."""
    rows = [f"`points.json` version {VERSION} (`covgan_utils/widget/schema.py`; the page also reads version 1, which has no optional blocks).",
            "", "| field | type | shape | meaning |", "| --- | --- | --- | --- |"]
    for f in FIELDS:
        kind = "list of objects" if f.kind == "object" and f.shape else f.kind.replace("|", " or ")
        shape = "–" if f.kind == "object" and not f.shape else _shape_text(f.shape)
        meaning = f.meaning + (" (optional)" if f.optional else "") + (f"; one of {', '.join(f'`{c}`' for c in f.choices)}" if f.choices else "")
        rows.append(f"| `{f.name}` | {kind} | {shape} | {meaning} |")
    return "\n".join(rows) + "\n"


def doc_section(text):
    """The schema section quoted between BEGIN and END in a document's text (None if it has none)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN):end].strip("\n") + "\n"


def write_doc(path):
    """Rewrite the section between BEGIN and END of `path` with `markdown()`."""
    path = pathlib.Path(path)
    text = path.read_text()
    if doc_section(text) is None:
        raise ValueError(f"{path} has no {BEGIN} ... {END} section")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{markdown()}{END}{tail}")
    return path


DOC = paths.PROJECT_ROOT / "docs" / "WIDGET.md"


if __name__ == "__main__":
    print(write_doc(DOC))
