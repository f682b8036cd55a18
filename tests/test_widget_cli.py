import urllib.request

import pytest

from covgan_utils import autoencoder, cli, paths, widget


def parse(*argv):
    return cli.build_parser().parse_args(argv)


def test_commands_parse():
    args = parse("widget", "export", "--autoencoder", "3", "--gan", "none")
    assert cli.load_handler(args.handler) is widget._cmd_export and args.autoencoder == "3"
    assert cli.AUTOENCODER_PRESETS == tuple(autoencoder.PRESETS)
    assert widget._gan_arg(args.gan) is None
    assert parse("widget", "serve", "--port", "8123").port == 8123
    assert parse("widget", "train", "--preset", "smoke").preset == "smoke"
    with pytest.raises(SystemExit):
        parse("widget", "train", "--preset", "huge")


def test_serve_binds_loopback(tmp_path):
    (tmp_path / "index.html").write_text("<p>ok</p>")
    (tmp_path / "widget.js").write_text("export {};")
    server, url = widget.start_server(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(url + "widget.js") as response:
            assert response.headers["Content-Type"].startswith("text/javascript")  # ES modules need a JS type
    finally:
        server.shutdown()


def test_serve_without_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="widget export"):
        widget.start_server(tmp_path)


def test_missing_converter_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("COVGAN_TFJS_CONVERTER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make install-widget"):
        widget.find_converter()


def test_page_uses_local_libraries_or_pinned_cdn(tmp_path, monkeypatch):
    local = tmp_path / "local"
    local.mkdir()
    if all((widget.NODE_MODULES / src).is_file() for src in widget.VENDOR.values()):
        widget._write_page(local, cdn_fallback=False)
        html = (local / "index.html").read_text()
        assert "./vendor/tf.min.js" in html and "https://" not in html and "{{" not in html
        assert (local / "vendor" / "TrackballControls.js").is_file()

    monkeypatch.setattr(widget, "NODE_MODULES", tmp_path / "no_node_modules")
    with pytest.raises(FileNotFoundError, match="make install-widget"):
        widget._write_page(tmp_path, cdn_fallback=False)
    cdn = tmp_path / "cdn"
    cdn.mkdir()
    widget._write_page(cdn, cdn_fallback=True)
    html = (cdn / "index.html").read_text()
    assert "@tensorflow/tfjs@4.22.0/dist/tf.min.js" in html and "three@0.170.0/build/three.module.min.js" in html
    assert not (cdn / "vendor").exists()
