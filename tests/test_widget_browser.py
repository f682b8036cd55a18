"""The exported latent widget in real headless Chromium (Debian's package, driven by Playwright)."""
import pathlib
import shutil

import numpy as np
import pytest

from covgan_utils import autoencoder as ae
from covgan_utils import paths, widget

from widget_fixtures import smoke_run, tiny_generator_images

CHROMIUM = pathlib.Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = paths.PROJECT_ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (make install-widget)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("widget")
    run = smoke_run(tmp)
    fake = tiny_generator_images(6)
    out = widget.export_widget(run, gan=fake, out_dir=tmp / "latent_widget", verbose=0)
    return run, out


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def open_widget(browser, folder):
    server, url = widget.start_server(folder)
    page = browser.new_page(viewport={"width": 1300, "height": 720})
    messages = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    page.goto(url)
    page.wait_for_function("window.covganWidget && (window.covganWidget.state.ready || window.covganWidget.state.error)", timeout=30000)
    return server, page, messages


def test_widget_decodes_like_keras(exported, browser):
    run, out = exported
    _, _, decoder = ae.load_autoencoder(run)
    latents = np.load(run / ae.LATENTS_FILE)
    server, page, messages = open_widget(browser, out)
    try:
        assert page.evaluate("window.covganWidget.state.error") is None
        errors = [m for m in messages if m[0] in ("error", "pageerror")]
        assert not errors, errors

        n_encoded = len(latents["real_z"]) + len(latents["generated_z"])
        assert page.evaluate("window.covganWidget.dotCount") == n_encoded
        assert int(page.inner_text("#n-covid")) + int(page.inner_text("#n-noncovid")) == len(latents["real_z"])
        assert int(page.inner_text("#n-generated")) == len(latents["generated_z"]) == 6

        x0, x1, y0, y1 = page.evaluate("window.covganWidget.points.bounds")
        for fx, fy in ((0.25, 0.3), (0.5, 0.5), (0.8, 0.7)):
            target = [x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)]
            cx, cy = page.evaluate("z => window.covganWidget.latentToClient(z)", target)
            before = page.evaluate("window.covganWidget.state.decodes")
            page.mouse.move(cx, cy)
            page.wait_for_function(
                "n => { const s = window.covganWidget.state; return s.decodes > n && !s.busy && s.decodedLatent === s.latent; }",
                arg=before, timeout=10000)
            z = np.array(page.evaluate("window.covganWidget.state.decodedLatent"), np.float32)
            assert np.allclose(z, target, atol=0.05 * (x1 - x0))  # the cursor landed where aimed
            shown = np.array(page.evaluate("window.covganWidget.decodedPixels()"), np.float64) / 255.0
            expected = (decoder.predict(z[None], verbose=0)[0, ..., 0].astype(np.float64).ravel() + 1.0) / 2.0
            assert np.max(np.abs(shown - expected)) <= 1.0 / 255.0 + 1e-9
            assert page.locator("#neighbours li").count() == 5

        errors = [m for m in messages if m[0] in ("error", "pageerror")]
        assert not errors, errors
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget.png"))
        assert (ARTIFACTS / "widget.png").stat().st_size > 10_000
    finally:
        page.close()
        server.shutdown()


def test_corrupt_model_shows_readable_error(exported, browser, tmp_path):
    _, out = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "model" / "model.json").write_text('{"format": "graph-model", "modelTopology": {"node": [')
    server, page, _ = open_widget(browser, broken)
    try:
        error = page.locator("#error")
        assert error.is_visible()
        assert not page.locator("#app").is_visible()  # no half-drawn page under the message
        text = error.inner_text()
        assert "decoder model" in text and "model/model.json" in text
        assert "widget export" in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget-error.png"))
    finally:
        page.close()
        server.shutdown()


def test_missing_model_shows_readable_error(exported, browser, tmp_path):
    _, out = exported
    broken = tmp_path / "missing"
    shutil.copytree(out, broken)
    shutil.rmtree(broken / "model")
    server, page, _ = open_widget(browser, broken)
    try:
        assert page.locator("#error").is_visible()
        assert "HTTP 404" in page.inner_text("#error")
    finally:
        page.close()
        server.shutdown()
