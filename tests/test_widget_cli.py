import json
import urllib.request

import cv2
import numpy as np
import pytest

from covgan_utils import cli, config
from covgan_utils import runs as runs_lib
from covgan_utils.cli import args as cli_args
from covgan_utils.cli import widget
from covgan_utils.inversion import projection
from covgan_utils.training import loop
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder, export
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
        export._write_page(local, cdn_fallback=False)
        html = (local / "index.html").read_text()
        assert "./vendor/tf.min.js" in html and "https://" not in html and "{{" not in html
        assert (local / "vendor" / "TrackballControls.js").is_file()

    monkeypatch.setattr(widget, "NODE_MODULES", tmp_path / "no_node_modules")
    with pytest.raises(FileNotFoundError, match="make install-widget"):
        export._write_page(tmp_path, cdn_fallback=False)
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    export._write_page(cdn, cdn_fallback=True)
    html = (cdn / "index.html").read_text()
    assert "@tensorflow/tfjs@4.22.0/dist/tf.min.js" in html and "three@0.170.0/build/three.module.min.js" in html
    assert not (cdn / "vendor").exists()


# ---------------------------------------------------------------- projection overlays

V1_KEYS = ["version", "image_size", "classes", "bounds", "real", "generated", "thumbs", "autoencoder"]


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
    """(smoke autoencoder run, smoke GAN run, two scan files of the synthetic data)."""
    from conftest import make_blobs
    from widget_fixtures import smoke_run


    tmp = tmp_path_factory.mktemp("projection")
    autoencoder_run = smoke_run(tmp)
    gan_run = loop.train(config.get_preset("smoke", epochs=1), tmp / "00001-smoke", images=make_blobs(), verbose=False)
    scans = sorted((tmp / "scans" / "CT_NonCOVID").glob("*.png"))
    return autoencoder_run, gan_run, (scans[0], scans[-1])


@pytest.fixture
def no_converter(monkeypatch):
    """The TF.js conversion replaced by a stub: these tests read points.json and thumbs.png only."""
    def stub(decoder, out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "model.json").write_text("{}")
        return out_dir / "model.json"

    monkeypatch.setattr(widget, "export_decoder_tfjs", stub)


def read_points(folder):
    return json.loads((folder / "points.json").read_text())


def test_export_without_projection_is_version_1(runs, tmp_path, no_converter):
    autoencoder_run, _, _ = runs
    assert cli.main(["widget", "export", "--autoencoder", str(autoencoder_run), "--gan", "none", "--out", str(tmp_path), "--cdn-fallback"]) == 0
    points = read_points(tmp_path)
    assert list(points) == V1_KEYS and points["version"] == 1
    real_z = np.load(autoencoder_run / autoencoder.LATENTS_FILE)["real_z"]
    assert points["bounds"] == export._bounds(real_z, np.zeros((0, 2)))
    assert cv2.imread(str(tmp_path / "thumbs.png")).shape[0] == export.THUMB  # 32 real thumbnails: one sprite row


def test_export_maps_projections_and_progressions(runs, tmp_path, no_converter):
    autoencoder_run, gan_run, (file_a, file_b) = runs
    argv = ["widget", "export", "--autoencoder", str(autoencoder_run), "--gan", "none", "--out", str(tmp_path), "--cdn-fallback",
            "--generator", str(gan_run), "--project", "3", "--progression", str(file_a), str(file_b), "--progression", "0", "pat13_2.png",
            "--project-steps", "5", "--project-starts", "1", "--path-steps", "4"]
    assert cli.main(argv) == 0
    points = read_points(tmp_path)
    assert points["version"] == 2 and list(points)[:len(V1_KEYS)] == V1_KEYS
    n_real = len(points["real"]["z"])
    projected = points["projected"]
    assert len(projected["z"]) == len(projected["real"]) == len(projected["loss"]) == 3
    assert all(points["real"]["split"][i] == "val" for i in projected["real"]) and projected["thumb_offset"] == n_real

    first, second = points["progressions"]
    assert first["inputs"] == [file_a.name, file_b.name] and first["input_real"] == [None, None]
    assert second["input_real"] == [0, points["real"]["file"].index("pat13_2.png")]
    for p in (first, second):
        assert len(p["z"]) == len(p["thumbs"]) == 4 and len(p["input_z"]) == len(p["input_thumbs"]) == 2 and p["mode"] == "linear"
    assert first["thumbs"][0] == n_real + 3 and second["input_thumbs"][-1] == n_real + 3 + 2 * 6 - 1
    sprite = cv2.imread(str(tmp_path / "thumbs.png"))
    assert sprite.shape[0] == export.THUMB * (1 + (n_real + 3 + 12 - 1) // export.SPRITE_COLS)
    assert points["projection"] == {"generator": gan_run.name, "space": "z", "steps": 5, "starts": 1, "features": "domain", "seed": 0}

    # the path runs from the encoding of A's projection to that of B's, and the inputs sit at their own encodings

    _, encoder, _ = autoencoder.load_autoencoder(autoencoder_run)
    inputs = projection.read_images([file_a, file_b])
    ends = projection.project(runs_lib.load_generator(gan_run), inputs, num_steps=5, starts=1, seed=0)["images"]  # [2, 128, 128, 1]
    np.testing.assert_allclose(np.array(first["z"])[[0, -1]], encoder.predict(ends, verbose=0), atol=1e-4)
    np.testing.assert_allclose(first["input_z"], encoder.predict(inputs, verbose=0), atol=1e-4)


@pytest.mark.parametrize("options, message", [
    ({"project": -1}, "project must be a whole number >= 0"),
    ({"path_steps": 1}, "path_steps must be a whole number >= 2"),
    ({"mode": "cubic"}, "unknown mode 'cubic'"),
    ({"progression": [("missing.png", "0")]}, "missing.png: no such image file"),
    ({"progression": [("0", "999")]}, "real scan index 999 is out of range"),
    ({"progression": [("0",)]}, "a progression is a pair"),
])
def test_bad_projection_options_are_one_line_value_errors(runs, tmp_path, options, message):
    with pytest.raises(ValueError, match=message) as err:
        export.export_widget(runs[0], gan=None, out_dir=tmp_path / "out", verbose=0, **options)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()  # nothing written


def test_missing_progression_file_on_the_command_line(runs, tmp_path, capsys):
    argv = ["widget", "export", "--autoencoder", str(runs[0]), "--gan", "none", "--out", str(tmp_path / "out"),
            "--progression", str(tmp_path / "nope.png"), "0"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "nope.png: no such image file" in err
