"""Serving an exported widget folder on 127.0.0.1 (`widget serve`), and showing it inside a notebook."""
import errno
import functools
import http.server
import json
import os
import pathlib
import sys
import threading

from covgan_utils.widget import schema

# ---------------------------------------------------------------- serving

ABORTED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)  # the client closed its end (a cancelled download)


def log(message):
    """One line `widget: <message>` on stderr."""
    print(f"widget: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the widget folder and nothing outside it: `..` in any spelling (`/../`, `%2e%2e/`,
    `..%2f`, ...) is dropped by `translate_path`; a path with a NUL byte or an undecodable name, or one that
    resolves outside the folder (a symlink), is answered 403."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".json": "application/json", ".bin": "application/octet-stream"}

    def log_message(self, *args):
        pass

    def handle_one_request(self):
        """One request; a client that goes away mid-answer, or any other error, is one line on stderr, not a traceback."""
        self.path = None  # set once a request line is read
        try:
            super().handle_one_request()
        except ABORTED:
            self.close_connection = True
            if self.path is not None:  # a client dropping an idle kept-alive connection is routine: no line
                log(f"client {self.client_address[0]} closed the connection during {self.path}")
        except Exception as err:  # noqa: BLE001 -- the server keeps serving the page's other requests
            self.close_connection = True
            log(f"error answering {self.path or 'a request'} to {self.client_address[0]}: {type(err).__name__}: {err}")

    def send_head(self):
        if not self._inside(self.translate_path(self.path)):
            self.send_error(http.HTTPStatus.FORBIDDEN, "outside the widget folder")
            return None
        return super().send_head()

    def _inside(self, path):
        try:
            os.fsencode(path)  # NUL bytes and lone surrogates (from %-escapes) make no file name
            if "\x00" in path:
                return False
            root = os.path.realpath(self.directory)
            return os.path.commonpath([root, os.path.realpath(path)]) == root
        except ValueError:
            return False


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer whose leftover request errors (outside a handler's request) are one line, not a traceback."""

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if isinstance(err, ABORTED):
            log(f"client {client_address[0]} closed the connection")
        else:
            log(f"error with client {client_address[0]}: {type(err).__name__}: {err}")


BIND_HINTS = {errno.EADDRINUSE: "another program holds it", errno.EACCES: "ports below 1024 need administrator rights"}


PORT_FIX = "choose another --port, or --port 0 for any free port"


def bind(host, port, handler):
    """A `_Server` on host:port; a port out of range or that cannot be bound is a one-line error naming it and the fix."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port {port!r} is not a whole number in [0, 65535]; {PORT_FIX}")
    try:
        return _Server((host, port), handler)
    except OSError as err:
        hint = BIND_HINTS.get(err.errno)
        why = (err.strerror or type(err).__name__) + (f": {hint}" if hint else "")
        raise OSError(f"cannot serve on {host} port {port} ({why}); {PORT_FIX}") from None


MODEL_JSON = "model/model.json"


def check_model_json(directory):
    """Check the TF.js model of an exported widget, `<directory>/model/model.json`: a JSON object with a
    `modelTopology` object and a `weightsManifest` list whose weight files exist inside model/. Raises a
    one-line FileNotFoundError / ValueError naming the file and the fix."""
    file = pathlib.Path(directory) / MODEL_JSON
    fix = "re-export the widget with `python -m covgan_utils widget export`"
    if not file.is_file():
        raise FileNotFoundError(f"no {MODEL_JSON} in {directory}: the widget export is incomplete; {fix}")
    try:
        blob = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{file}: not valid JSON ({' '.join(str(err).split())}); {fix}") from None
    manifest = blob.get("weightsManifest") if isinstance(blob, dict) else None
    if not isinstance(blob, dict) or not isinstance(blob.get("modelTopology"), dict) or not isinstance(manifest, list) \
            or not all(isinstance(g, dict) and isinstance(g.get("paths"), list) for g in manifest):
        raise ValueError(f"{file}: not a TF.js graph model (needs a modelTopology object and a weightsManifest list of weight groups); {fix}")
    model_dir = file.parent.resolve()
    for name in (n for g in manifest for n in g["paths"]):
        shard = model_dir / name if isinstance(name, str) and "\x00" not in name else None
        if shard is None or os.path.commonpath([model_dir, shard.resolve()]) != str(model_dir):
            raise ValueError(f"{file}: weight file {name!r} is not a file name inside model/; {fix}")
        if not shard.is_file():
            raise FileNotFoundError(f"{file}: weight file {shard} is missing; {fix}")


def check_points_json(directory):
    """Check `<directory>/points.json` against the format (`schema.validate`); one-line errors name the file, the field and the fix."""
    file = pathlib.Path(directory) / schema.FILE
    fix = "re-export the widget with `python -m covgan_utils widget export`"
    if not file.is_file():
        raise FileNotFoundError(f"no {schema.FILE} in {directory}: the widget export is incomplete; {fix}")
    try:
        blob = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{file}: not valid JSON ({' '.join(str(err).split())}); {fix}") from None
    try:
        schema.validate(blob, source=str(file))
    except ValueError as err:
        raise ValueError(f"{err}; {fix}") from None


def start_server(directory=None, port=0, host="127.0.0.1", check_files=False):
    """Serve `directory` on host:port (0 = any free port) in a daemon thread; returns (server, url).
    With `check_files` (the `widget serve` command) its model/model.json and points.json are checked first
    (`check_model_json`, `check_points_json`); without, a damaged file is left to the page, which shows a
    readable error in the browser."""
    directory = pathlib.Path(directory) if directory else schema.DEFAULT_OUT
    if not (directory / "index.html").is_file():
        raise FileNotFoundError(f"no widget in {directory}: run `python -m covgan_utils widget export` first")
    if check_files:
        check_model_json(directory)
        check_points_json(directory)
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = bind(host, port, handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}/"


def show(directory=None, port=0, height=760):
    """Serve the widget and display it inline (JupyterLab: IFrame; Colab: the kernel port proxied as an iframe)."""
    server, url = start_server(directory, port)
    try:
        from google.colab import output  # noqa: F401

        output.serve_kernel_port_as_iframe(server.server_address[1], height=height)
        return server
    except ImportError:
        from IPython.display import IFrame, display

        print(f"widget served at {url}")
        display(IFrame(url, width="100%", height=height))
        return server
