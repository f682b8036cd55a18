import copy
import html
import json
import re
import types
import urllib.request

import cv2
import numpy as np
import pytest

from covgan_utils import cli
from covgan_utils import runs as runs_lib
from covgan_utils.cli import args as cli_args
from covgan_utils.cli import widget
from covgan_utils.inversion import projection
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder, export, schema
from covgan_utils.widget import server as server_lib


def parse(*argv):
    return cli.build_parser().parse_args(argv)


def test_commands_parse():
    args = parse("widget", "export", "--autoencoder", "3", "--gan", "none")
    assert args.handler is widget.cmd_export and args.autoencoder == "3"
    assert cli_args.AUTOENCODER_PRESETS == tuple(autoencoder.PRESETS)
    assert widget.gan_arg(args.gan) is None
    assert parse("widget", "serve", "--port", "8123").port == 8123
    assert parse("widget", "train", "--preset", "smoke").preset == "smoke"
    with pytest.raises(SystemExit):
        parse("widget", "train", "--preset", "huge")


def test_serve_binds_loopback(tmp_path):
    (tmp_path / "index.html").write_text("<p>ok</p>")
    (tmp_path / "widget.js").write_text("export {};")
    server, url = server_lib.start_server(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(url + "widget.js") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")  # ES modules need a JS type
    finally:
        server.shutdown()


def test_serve_without_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="widget export"):
        server_lib.start_server(tmp_path)


def test_missing_converter_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("COVGAN_TFJS_CONVERTER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make install-widget"):
        export.find_converter()


def test_page_uses_local_libraries_or_pinned_cdn(tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    if all((export.NODE_MODULES / src).is_file() for src in export.VENDOR.values()):
        export.write_page(local, cdn_fallback=False)
        html = (local / "index.html").read_text()
        assert "./vendor/tf.min.js" in html and "https://" not in html and "{{" not in html
        assert (local / "vendor" / "TrackballControls.js").is_file()

    monkeypatch.setattr(export, "NODE_MODULES", tmp_path / "no_node_modules")
    with pytest.raises(FileNotFoundError, match="make install-widget"):
        export.write_page(tmp_path, cdn_fallback=False)
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    export.write_page(cdn, cdn_fallback=True)
    html = (cdn / "index.html").read_text()
    assert "@tensorflow/tfjs@4.22.0/dist/tf.min.js" in html and "three@0.170.0/build/three.module.min.js" in html
    assert not (cdn / "vendor").exists()


def test_page_carries_the_points_format(tmp_path):
    export.write_page(tmp_path, cdn_fallback=True)
    meta = re.search(r'<meta name="covgan-points-format" content="([^"]*)">', (tmp_path / "index.html").read_text())
    assert json.loads(html.unescape(meta.group(1))) == schema.page_contract()
    assert schema.page_contract()["versions"][-1] == schema.VERSION
    assert "pointsFormat()" in (tmp_path / "widget.js").read_text()  # the page reads it before points.json


# ---------------------------------------------------------------- the points.json schema

def test_docs_quote_the_schema():
    quoted = schema.doc_section(schema.DOC.read_text())
    assert quoted is not None, f"docs/WIDGET.md lacks the {schema.BEGIN} section"
    assert quoted == schema.markdown(), "docs/WIDGET.md quotes an old schema: run `python -m covgan_utils.widget.schema`"
    for field in schema.FIELDS:
        assert f"| `{field.name}` |" in quoted


def test_schema_section_is_rewritten(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# head\n\n{schema.BEGIN}\nold table\n{schema.END}\n\ntail\n")
    schema.write_doc(doc)
    text = doc.read_text()
    assert schema.doc_section(text) == schema.markdown() and text.startswith("# head") and text.endswith("tail\n")

# ---------------------------------------------------------------- projection overlays

REQUIRED = schema.top_level(required_only=True)


def test_projection_flags_parse():
    args = parse("widget", "export", "--project", "3", "--progression", "a.png", "b.png", "--progression", "0", "7",
                 "--generator", "5", "--project-steps", "5", "--project-starts", "1", "--path-steps", "4", "--mode", "slerp")
    assert args.project == 3 and args.progression == [["a.png", "b.png"], ["0", "7"]] and args.generator == "5"
    assert (args.project_steps, args.project_starts, args.path_steps, args.mode) == (5, 1, 4, "slerp")
    defaults = parse("widget", "export")
    assert (defaults.project, defaults.progression, defaults.generator, defaults.path_steps) == (0, None, "release", 8)


@pytest.mark.parametrize("argv", [("--project", "-1"), ("--path-steps", "1"), ("--project-steps", "2"), ("--progression", "a.png"), ("--mode", "cubic")])
def test_bad_projection_flags_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse("widget", "export", *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and argv[0] in err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A models folder with a smoke autoencoder run (00000), a one-epoch smoke GAN run (00001) and the synthetic scans."""
    from widget_fixtures import smoke_gan_run, smoke_run

    tmp = tmp_path_factory.mktemp("models")
    autoencoder_run = smoke_run(tmp)
    gan_run = smoke_gan_run(tmp)
    scans = sorted((tmp / "scans" / "CT_NonCOVID").glob("*.png"))
    return types.SimpleNamespace(models=tmp, autoencoder=autoencoder_run, gan=gan_run, scans=scans)


@pytest.fixture
def no_converter(monkeypatch):
    """The TF.js conversion replaced by a stub: these tests read points.json and thumbs.png only."""
    def stub(decoder, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.json").write_text("{}")
        return out_dir / "model.json"

    monkeypatch.setattr(export, "export_decoder_tfjs", stub)


def read_points(folder):
    return json.loads((folder / "points.json").read_text())


def test_export_without_projection_has_only_the_required_blocks(runs, tmp_path, no_converter):
    assert cli.main(["widget", "export", "--autoencoder", str(runs.autoencoder), "--gan", "none", "--out", str(tmp_path), "--cdn-fallback"]) == 0
    points = read_points(tmp_path)
    assert list(points) == REQUIRED and points["version"] == schema.VERSION
    assert schema.validate(points) is points
    latents = np.load(tmp_path / autoencoder.LATENTS_FILE)  # the export's own latents, next to points.json
    assert points["bounds"] == export._bounds(latents["real_z"], np.zeros((0, 2)))
    np.testing.assert_allclose(points["real"]["z"], latents["real_z"], atol=1e-5)
    assert cv2.imread(str(tmp_path / "thumbs.png")).shape[0] == export.THUMB  # 32 real thumbnails: one sprite row


def test_export_maps_projections_and_progressions_and_reads_only(runs, tmp_path, no_converter):
    from widget_fixtures import tree_digest

    file_a, file_b = runs.scans[0], runs.scans[-1]
    before = {run: tree_digest(run) for run in (runs.autoencoder, runs.gan)}
    argv = ["widget", "export", "--autoencoder", str(runs.autoencoder), "--gan", str(runs.gan), "--n-generated", "3", "--out", str(tmp_path),
            "--cdn-fallback", "--generator", str(runs.gan), "--project", "3", "--progression", str(file_a), str(file_b),
            "--progression", "0", "pat13_2.png", "--project-steps", "5", "--project-starts", "1", "--path-steps", "4"]
    assert cli.main(argv) == 0
    for run, digest in before.items():
        assert tree_digest(run) == digest, f"the export changed its input {run.name}"
    points = read_points(tmp_path)
    assert list(points) == schema.top_level() and points["version"] == schema.VERSION
    n_real, n_gen = len(points["real"]["z"]), len(points["generated"]["z"])
    assert n_gen == 3 and points["generated"]["source"] == runs.gan.name and points["thumbs"]["generated_offset"] == n_real
    projected = points["projected"]
    assert len(projected["z"]) == len(projected["real"]) == len(projected["loss"]) == 3
    assert all(points["real"]["split"][i] == "val" for i in projected["real"]) and projected["thumb_offset"] == n_real + n_gen

    first, second = points["progressions"]
    assert first["inputs"] == [file_a.name, file_b.name] and first["input_real"] == [None, None]
    assert second["input_real"] == [0, points["real"]["file"].index("pat13_2.png")]
    for p in (first, second):
        assert len(p["z"]) == len(p["thumbs"]) == 4 and len(p["input_z"]) == len(p["input_thumbs"]) == 2 and p["mode"] == "linear"
    assert first["thumbs"][0] == n_real + n_gen + 3 and second["input_thumbs"][-1] == n_real + n_gen + 3 + 2 * 6 - 1
    sprite = cv2.imread(str(tmp_path / "thumbs.png"))
    assert sprite.shape[0] == export.THUMB * (1 + (n_real + n_gen + 3 + 12 - 1) // export.SPRITE_COLS)
    assert points["projection"] == {"generator": runs.gan.name, "space": "z", "steps": 5, "starts": 1, "features": "domain", "seed": 0}

    # the path runs from the encoding of A's projection to that of B's, and the inputs sit at their own encodings
    _, encoder, _ = autoencoder.load_autoencoder(runs.autoencoder)
    inputs = projection.read_images([file_a, file_b])
    ends = projection.project(runs_lib.load_generator(runs.gan), inputs, num_steps=5, starts=1, seed=0)["images"]  # [2, 128, 128, 1]
    np.testing.assert_allclose(np.array(first["z"])[[0, -1]], encoder.predict(ends, verbose=0), atol=1e-4)
    np.testing.assert_allclose(first["input_z"], encoder.predict(inputs, verbose=0), atol=1e-4)


# ---------------------------------------------------------------- run designators

def designator(run, form):
    """How a flag names `run`: its number, `latest` (the newest run of its kind in models/) or its path."""
    return {"number": str(int(run.name[:5])), "latest": "latest", "path": str(run)}[form]


@pytest.mark.parametrize("form", ["number", "latest", "path"])
def test_every_run_flag_takes_the_same_designators(runs, tmp_path, monkeypatch, no_converter, form):
    monkeypatch.setattr(paths, "MODELS_DIR", runs.models)
    argv = ["widget", "export", "--autoencoder", designator(runs.autoencoder, form), "--gan", designator(runs.gan, form),
            "--generator", designator(runs.gan, form), "--n-generated", "2", "--progression", "0", "1", "--path-steps", "2",
            "--project-steps", "5", "--project-starts", "1", "--out", str(tmp_path), "--cdn-fallback"]
    assert cli.main(argv) == 0
    points = read_points(tmp_path)
    assert points["autoencoder"]["run"] == runs.autoencoder.name
    assert points["generated"]["source"] == runs.gan.name and len(points["generated"]["z"]) == 2
    assert points["projection"]["generator"] == runs.gan.name


@pytest.mark.parametrize("flag, value, message", [
    ("--autoencoder", "1", "run 00001-smoke is a gan run"),
    ("--gan", "0", "not a gan run"),
    ("--generator", "7", "run 7 "),
    ("--autoencoder", "release", "there is no released autoencoder"),
])
def test_bad_run_designators_are_one_line_errors(runs, tmp_path, monkeypatch, capsys, flag, value, message):
    monkeypatch.setattr(paths, "MODELS_DIR", runs.models)
    argv = ["widget", "export", "--gan", "none", "--progression", "0", "1", "--out", str(tmp_path / "out"), flag, value]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_train_takes_a_gan_designator(runs, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / runs.gan.name).symlink_to(runs.gan, target_is_directory=True)  # run 1 of this models folder
    monkeypatch.setattr(paths, "MODELS_DIR", models)
    monkeypatch.setenv("COVGAN_DATA", str(runs.models / "scans"))
    assert cli.main(["widget", "train", "--preset", "smoke", "--epochs", "1", "--gan", "9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run 9 ") and str(models) in err  # names the designator and where it looked
    assert sorted(p.name for p in models.iterdir()) == [runs.gan.name]  # refused before training: no run folder

    assert cli.main(["widget", "train", "--preset", "smoke", "--epochs", "1", "--gan", "1"]) == 0
    run = models / "00002-autoencoder-smoke"
    latents = np.load(run / autoencoder.LATENTS_FILE)
    assert str(latents["gan_run"]) == runs.gan.name and latents["generated_z"].shape == (autoencoder.get_config("smoke").n_generated, 2)
    assert autoencoder.AutoencoderConfig.load(run).gan_run == "1"


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("options, message", [
    ({"project": -1}, r"projection option field 'project' must be a whole number in \[0, 1000000\], got -1"),
    ({"path_steps": 1}, r"field 'path_steps' must be a whole number in \[2, 10000\], got 1"),
    ({"steps": 2}, r"field 'steps' must be a whole number in \[5, 1000000\], got 2"),
    ({"mode": "cubic"}, "field 'mode' must be one of linear, slerp, got \"cubic\""),
    ({"progression": [("missing.png", "0")]}, "missing.png: no such image file"),
    ({"progression": [("0", "999")]}, "real scan index 999 is out of range"),
    ({"progression": [("0",)]}, "a progression is a pair"),
    ({"project_steps": 5}, r"unknown projection option\(s\) \['project_steps'\]"),
])
def test_bad_projection_options_are_one_line_value_errors(runs, tmp_path, options, message):
    with pytest.raises(ValueError, match=message) as err:
        export.export_widget(runs.autoencoder, gan=None, out_dir=tmp_path / "out", verbose=0, projection=options)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()  # nothing written


def test_missing_progression_file_on_the_command_line(runs, tmp_path, capsys):
    argv = ["widget", "export", "--autoencoder", str(runs.autoencoder), "--gan", "none", "--out", str(tmp_path / "out"),
            "--progression", str(tmp_path / "nope.png"), "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "nope.png: no such image file" in err


# ---------------------------------------------------------------- validation of points.json

@pytest.fixture(scope="module")
def exported_points(runs, tmp_path_factory):
    """points.json of an export with every block (GAN overlay, projections, a progression), converter stubbed."""
    out = tmp_path_factory.mktemp("points")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "export_decoder_tfjs", lambda decoder, model_dir: model_dir.mkdir(parents=True, exist_ok=True))
        export.export_widget(runs.autoencoder, gan=runs.gan, n_generated=2, out_dir=out, verbose=0, cdn_fallback=True,
                             projection={"project": 2, "progression": [(0, 1)], "generator": runs.gan, "path_steps": 3, "steps": 5, "starts": 1, "features": None})
    return read_points(out)


def changed(points, path, value):
    """A deep copy of points with the field at `path` (keys and list indices) set to `value` (`...`: removed)."""
    blob = copy.deepcopy(points)
    *parents, last = path
    target = blob
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return blob


@pytest.mark.parametrize("path, value, message", [
    (("version",), 99, "field 'version' is 99, this code reads version 1 or 2"),
    (("real",), ..., "field 'real' is missing"),
    (("real", "colour"), [], "unknown field 'real.colour'"),
    (("real", "cls", 0), 7, "field 'real.cls' holds 7, not an index into the 2 classes"),
    (("real", "cls", 0), 0.5, "field 'real.cls[0]' must be a whole number"),
    (("real", "file"), ["a.png"], "field 'real.file' must have n_real=32 items"),
    (("real", "z", 3), [0.1], "field 'real.z[3]' must have 2 items"),
    (("real", "split", 1), "test", "field 'real.split[1]' must be one of train, val"),
    (("bounds", 0), float("nan"), "field 'bounds[0]' must be a finite number"),
    (("projected", "real", 1), 999, "real scan index 999"),
    (("progressions", 0, "z", 1), "far", "field 'progressions[0].z[1]' must be a list"),
    (("progressions", 0, "thumbs"), [1], "field 'progressions[0].thumbs' must have n_steps=3 items"),
    (("progressions", 0, "mode"), "cubic", "field 'progressions[0].mode' must be one of linear, slerp"),
    (("projection", "features"), 3, "field 'projection.features' must be a string or null"),
])
def test_validate_names_the_field(exported_points, path, value, message):
    assert schema.validate(copy.deepcopy(exported_points))  # the export itself is valid
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        schema.validate(changed(exported_points, path, value))
    assert str(err.value).startswith("points.json: ") and "\n" not in str(err.value)


def test_version_1_files_are_read_without_projection_blocks(exported_points):
    old = {key: value for key, value in exported_points.items() if not schema.BY_NAME[key].optional}
    assert schema.validate({**old, "version": 1})
    with pytest.raises(ValueError, match="version 1 has no projection blocks"):
        schema.validate({**exported_points, "version": 1})


def test_build_orders_and_refuses_unknown_blocks(exported_points):
    blocks = {k: v for k, v in reversed(list(exported_points.items())) if k != "version"}
    assert list(schema.build(**blocks)) == schema.top_level()
    with pytest.raises(ValueError, match="unknown points.json block"):
        schema.build(**blocks, colours={})


def test_serve_checks_points_json(exported_points, tmp_path):
    (tmp_path / "points.json").write_text(json.dumps(changed(exported_points, ("version",), 99)))
    with pytest.raises(ValueError, match="field 'version' is 99") as err:
        server_lib.check_points_json(tmp_path)
    assert str(tmp_path / "points.json") in str(err.value) and "widget export" in str(err.value)
    (tmp_path / "points.json").write_text(json.dumps(exported_points))
    server_lib.check_points_json(tmp_path)
