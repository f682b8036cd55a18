"""Screenshot of an exported latent widget in headless Chromium (for docs/img/widget.png).

    .venv/bin/python tools/widget_screenshot.py [WIDGET_DIR] [OUT_PNG] [FX FY]

FX FY: where to put the cursor, as fractions of the latent map (default 0.45 0.55).
"""
import pathlib
import sys

from playwright.sync_api import sync_playwright

from covgan_utils.util import paths
from covgan_utils.widget import export
from covgan_utils.widget import server as server_lib

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(folder=None, out=None, fx=0.45, fy=0.55):
    folder = pathlib.Path(folder) if folder else export.DEFAULT_OUT
    out = pathlib.Path(out) if out else paths.PROJECT_ROOT / "docs" / "img" / "widget.png"
    server, url = server_lib.start_server(folder)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1320, "height": 640})
            page.goto(url)
            page.wait_for_function("window.covganWidget && (window.covganWidget.state.ready || window.covganWidget.state.error)", timeout=60000)
            if page.evaluate("window.covganWidget.state.error"):
                raise SystemExit(page.evaluate("window.covganWidget.state.error"))
            x0, x1, y0, y1 = page.evaluate("window.covganWidget.points.bounds")
            cx, cy = page.evaluate("z => window.covganWidget.latentToClient(z)", [x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)])
            page.mouse.move(cx, cy)
            page.wait_for_function("() => { const s = window.covganWidget.state; return !s.busy && s.decodedLatent === s.latent; }")
            page.wait_for_timeout(500)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
            browser.close()
    finally:
        server.shutdown()
    print(out)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(*(a[:2]), *(float(v) for v in a[2:4]))
