"""The exported latent widget in real headless Chromium (Debian's package, driven by Playwright)."""
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest
from widget_fixtures import FAST_PROJECTION, smoke_gan_run, smoke_run

from covgan_utils import runs
from covgan_utils.inversion import projection
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder, export
from covgan_utils.widget import server as server_lib

CHROMIUM = pathlib.Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = paths.PROJECT_ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(), reason="needs Debian's chromium (make install-widget)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(smoke autoencoder run, its export with 6 samples of a real one-epoch smoke GAN run, that GAN run)."""
    tmp = tmp_path_factory.mktemp("widget")
    run = smoke_run(tmp)
    gan = smoke_gan_run(tmp)
    out = export.export_widget(run, gan=gan, n_generated=6, out_dir=tmp / "latent_widget", verbose=0)
    return run, out, gan


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield b
        b.close()


def open_widget(browser, folder):
    server, url = server_lib.start_server(folder)
    page = browser.new_page(viewport={"width": 1300, "height": 720})
    messages = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    page.goto(url)
    page.wait_for_function("window.covganWidget && (window.covganWidget.state.ready || window.covganWidget.state.error)", timeout=30000)
    return server, page, messages


def test_widget_decodes_like_keras(exported, browser):
    run, out, gan = exported
    _, _, decoder = autoencoder.load_autoencoder(run)
    latents = np.load(out / autoencoder.LATENTS_FILE)
    server, page, messages = open_widget(browser, out)
    try:
        assert page.evaluate("window.covganWidget.state.error") is None
        errors = [m for m in messages if m[0] in ("error", "pageerror")]
        assert not errors, errors

        n_encoded = len(latents["real_z"]) + len(latents["generated_z"])
        assert page.evaluate("window.covganWidget.dotCount") == n_encoded
        assert int(page.inner_text("#n-covid")) + int(page.inner_text("#n-noncovid")) == len(latents["real_z"])
        assert int(page.inner_text("#n-generated")) == len(latents["generated_z"]) == 6
        assert gan.name in page.inner_text("#about")  # the GAN run the green dots came from
        assert not page.locator("#legend-path").is_visible() and not page.locator("#legend-projected").is_visible()  # no projection blocks

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


PATH_RGB = (255, 127, 14)  # PATH_COLOR of widget.js


@pytest.fixture(scope="module")
def exported_paths(exported):
    """The same autoencoder exported with 3 projected scans and two progressions into the smoke GAN run."""
    run, out, gan = exported
    scans = sorted((run.parent / "scans" / "CT_COVID").glob("*.png"))
    pairs = [(scans[0], scans[5]), (0, "pat13_2.png")]
    options = export.ProjectionOptions(project=3, progression=pairs, generator=gan, path_steps=5, **FAST_PROJECTION)
    folder = export.export_widget(run, gan=None, out_dir=out.parent / "latent_widget_paths", verbose=0, projection=options)
    return folder, runs.load_generator(gan), scans


def test_widget_draws_projections_and_the_chosen_progression(exported_paths, browser):
    folder, generator, scans = exported_paths
    server, page, messages = open_widget(browser, folder)
    try:
        assert page.evaluate("window.covganWidget.state.error") is None
        api = "window.covganWidget"
        points = page.evaluate(f"{api}.points")
        assert page.evaluate(f"{api}.projectedCount") == 3 and page.inner_text("#n-projected") == "3"
        assert page.locator("#legend-projected").is_visible()
        select = page.locator("#progression-select")
        assert select.is_visible() and select.locator("option").count() == 3  # two progressions and "no path"
        assert page.evaluate(f"{api}.state.progression") == 0

        # switching the selector redraws the map with the other path; switching back restores it exactly
        first = page.evaluate(f"{api}.mapHash()")
        draws = page.evaluate(f"{api}.state.mapDraws")
        select.select_option("1")
        page.wait_for_function(f"n => {api}.state.mapDraws > n", arg=draws)
        assert page.evaluate(f"{api}.state.progression") == 1
        assert page.evaluate(f"{api}.mapHash()") != first
        path = points["progressions"][1]
        assert page.evaluate(f"z => {api}.mapPixel(z)", path["z"][2]) == list(PATH_RGB)  # a step marker of the chosen path
        select.select_option("-1")
        assert page.evaluate(f"{api}.state.progression") == -1 and page.evaluate(f"z => {api}.mapPixel(z)", path["z"][2]) != list(PATH_RGB)
        select.select_option("0")
        assert page.evaluate(f"{api}.mapHash()") == first

        # hovering a step shows its decoded GAN frame from the sprite
        path = points["progressions"][0]
        cx, cy = page.evaluate("z => window.covganWidget.latentToClient(z)", path["z"][2])
        page.mouse.move(cx, cy)
        page.wait_for_function(f"{api}.state.hovered && {api}.state.hovered.step !== undefined")
        assert page.locator("#tooltip").is_visible() and "step" in page.inner_text("#tooltip")
        step = page.evaluate(f"{api}.state.hovered.step")
        thumb = page.evaluate(f"{api}.state.hovered.thumb")
        assert thumb == path["thumbs"][step]
        sprite = cv2.imread(str(folder / "thumbs.png"), cv2.IMREAD_GRAYSCALE)
        size, cols = points["thumbs"]["size"], points["thumbs"]["cols"]
        r, c = divmod(thumb, cols)
        cell = sprite[r * size:(r + 1) * size, c * size:(c + 1) * size]
        shown = np.array(page.evaluate(f"{api}.tooltipPixels()"), np.int32).reshape(2 * size, 2 * size)
        np.testing.assert_array_equal(shown, np.repeat(np.repeat(cell, 2, 0), 2, 1))  # 32x32 cell drawn at 64x64
        images = projection.read_images([scans[0], scans[5]])
        frames = projection.progression(generator, images[0], images[1], 5, num_steps=5, starts=1, features=None, seed=0)["frames"]
        expected = export._thumbnails(frames[step:step + 1])[:size, :size]  # the frame decoded again, as a thumbnail
        assert np.abs(cell.astype(int) - expected.astype(int)).max() <= 1

        errors = [m for m in messages if m[0] in ("error", "pageerror")]
        assert not errors, errors
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget-paths.png"))
    finally:
        page.close()
        server.shutdown()


def test_corrupt_model_shows_readable_error(exported, browser, tmp_path):
    _, out, _ = exported
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
    _, out, _ = exported
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


def test_points_of_another_format_version_show_readable_error(exported, browser, tmp_path):
    _, out, _ = exported
    other = tmp_path / "other-version"
    shutil.copytree(out, other)
    points = json.loads((other / "points.json").read_text())
    (other / "points.json").write_text(json.dumps({**points, "version": 99}))
    server, page, _ = open_widget(browser, other)
    try:
        assert page.locator("#error").is_visible() and not page.locator("#app").is_visible()
        text = page.inner_text("#error")
        assert "points.json" in text and "format version 99" in text and "reads version 1 or 2" in text and "widget export" in text
    finally:
        page.close()
        server.shutdown()
