"""More of the boundary, in-process: sets too small for a metric refused before any sampling, the widget
server's ports and aborted downloads as one line, the seed range naming --seed and --n, numeric flags
refusing NaN and infinity, and absl's C++ log level following TF_CPP_MIN_LOG_LEVEL."""
import ctypes
import mmap
import re
import socket
import struct
import sys
import time
import types

import numpy as np
import pytest
from conftest import one_line_error
from PIL import Image

from covgan_utils import cli, runs, sampling
from covgan_utils.cli import args as cli_args
from covgan_utils.cli import widget as cli_widget
from covgan_utils.metrics import quality
from covgan_utils.metrics import report as report_lib
from covgan_utils.util import console
from covgan_utils.widget import server as server_lib


def _scans(folder, n, seed=0):
    """n small random 8-bit PNG scans in `folder`."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        Image.fromarray(rng.randint(0, 256, (32, 32), dtype=np.uint8), mode="L").save(folder / f"s{i}.png")
    return folder




def _argparse_exit(capsys, argv):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err.strip()


# ---------------------------------------------------------------- too few images for a metric

@pytest.fixture
def no_generator(monkeypatch, tmp_path):
    """`evaluate --run` with a run that resolves and loads, but whose generator must never be run; the calls of `generate`."""
    calls = []
    monkeypatch.setattr(runs, "resolve_run", lambda *a, **k: tmp_path)
    monkeypatch.setattr(runs, "load_generator", lambda *a, **k: object())
    monkeypatch.setattr(sampling, "generate", lambda *a, **k: calls.append("generate") or pytest.fail("the generator was run"))
    return calls


def test_registry_states_each_metric_minimum():
    assert set(quality.MIN_N) == set(quality.METRICS)
    assert quality.MIN_N["prdc"][0] == quality.PRDC_K + 1 == 6
    assert quality.MIN_N["kid"][0] == 4 and quality.MIN_N["fid"][0] == 2 and quality.MIN_N["ms_ssim"][0] == 2
    assert quality.strictest(report_lib.SCORED)[:2] == ("prdc", 6)


def test_evaluate_run_with_five_real_scans_stops_before_sampling(tmp_path, no_generator, capsys):
    real = _scans(tmp_path / "real", 5)
    argv = ["evaluate", "--run", "any", "--real", str(real), "--out", str(tmp_path / "e.json"), "--n", "20", "--features", "domain"]
    assert cli.main(argv) == 2
    one_line_error(capsys, "the real set has 5 images", "prdc needs at least 6", "k=5 nearest neighbours + 1", "--real folder with more scans")
    assert no_generator == [] and not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("extra, texts", [
    (["--n", "5"], ["the generated set has 5 images", "prdc needs at least 6", "pass --n 6 or more"]),
    (["--n", "10"], ["the real set has 10 images", "one half of it against the other", "at least 6 per half", "--no-baselines"]),
])
def test_evaluate_run_refuses_sets_cut_too_small(extra, texts, tmp_path, no_generator, capsys):
    real = _scans(tmp_path / "real", 30)
    assert cli.main(["evaluate", "--run", "any", "--real", str(real), "--out", str(tmp_path / "e.json"), "--features", "domain", *extra]) == 2
    one_line_error(capsys, *texts)
    assert no_generator == []


def test_evaluate_small_train_and_generated_folders(tmp_path, capsys):
    real, gen, train = _scans(tmp_path / "real", 12), _scans(tmp_path / "gen", 4, 1), _scans(tmp_path / "train", 3, 2)
    base = ["evaluate", "--real", str(real), "--out", str(tmp_path / "e.json"), "--features", "domain"]
    assert cli.main([*base, "--generated", str(gen)]) == 2
    one_line_error(capsys, "the generated set has 4 images", "prdc needs at least 6", "--generated folder")
    assert cli.main([*base, "--generated", str(real), "--train", str(train)]) == 2
    one_line_error(capsys, "the train set has 3 images", "--train folder with more scans")


def test_evaluate_images_checks_before_any_feature(monkeypatch):
    extracted = []
    monkeypatch.setattr(report_lib, "feature_extractor", lambda kind: ("domain", lambda images: extracted.append(len(images))))
    images = np.zeros((5, 128, 128, 1), np.float32)
    with pytest.raises(ValueError, match=r"^the generated set has 5 images; prdc needs at least 6"):
        report_lib.evaluate_images(images, np.zeros((40, 128, 128, 1), np.float32), baselines=False)
    assert extracted == []


@pytest.mark.parametrize("call, message", [
    (lambda: quality.prdc(np.zeros((5, 8)), np.ones((20, 8))), r"^the generated set has 5 images; prdc needs at least 6 \(k=5 nearest neighbours \+ 1\)"),
    (lambda: quality.prdc(np.ones((20, 8)), np.zeros((2, 8)), k=2), r"^the real set has 2 images; prdc needs at least 3 \(k=2 nearest"),
    (lambda: quality.kid(np.zeros((3, 8)), np.ones((20, 8))), r"^the generated set has 3 images; kid needs at least 4"),
    (lambda: quality.kid(np.zeros((20, 8)), np.ones((20, 8)), subset_size=2), r"kid subset_size must be at least 4, got 2"),
    (lambda: quality.fid(np.zeros((20, 8)), np.ones((1, 8))), r"^the real set has 1 images; fid needs at least 2 \(a covariance"),
    (lambda: quality.ms_ssim(np.zeros((1, 128, 128, 1))), r"ms_ssim needs at least 2"),
])
def test_metric_functions_refuse_too_few_rows(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_metric_functions_take_their_minimum():
    rng = np.random.RandomState(0)
    assert quality.prdc(rng.randn(6, 4), rng.randn(6, 4))["k"] == 5
    assert np.isfinite(quality.kid(rng.randn(4, 4), rng.randn(4, 4))["std"])
    assert np.isfinite(quality.fid(rng.randn(2, 4), rng.randn(2, 4))["value"])


# ---------------------------------------------------------------- widget server: ports and aborted downloads

@pytest.fixture
def widget_dir(tmp_path, monkeypatch):
    """A folder `widget serve` accepts (the model/points checks stubbed), and a serve that returns at once."""
    (tmp_path / "index.html").write_text("<p>ok</p>")
    monkeypatch.setattr(server_lib, "check_model_json", lambda directory: None)
    monkeypatch.setattr(server_lib, "check_points_json", lambda directory: None)
    monkeypatch.setattr(cli_widget, "threading", types.SimpleNamespace(Event=lambda: types.SimpleNamespace(wait=lambda: None)))
    return tmp_path


def test_serve_on_a_busy_port_is_one_line(widget_dir, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["widget", "serve", "--port", str(port), "--dir", str(widget_dir)]) == 2
    one_line_error(capsys, f"port {port}", "Address already in use", "choose another --port, or --port 0 for any free port")


def test_serve_on_port_zero_takes_a_free_port(widget_dir, capsys):
    assert cli.main(["widget", "serve", "--port", "0", "--dir", str(widget_dir)]) == 0
    assert "serving the latent widget at http://127.0.0.1:" in capsys.readouterr().out


@pytest.mark.parametrize("port", ["70000", "65536", "-1", "http", "80.5"])
def test_out_of_range_ports_name_the_flag(port, capsys):
    err = _argparse_exit(capsys, ["widget", "serve", "--port", port])
    assert err.startswith("error: ") and "\n" not in err and "argument --port" in err and "Traceback" not in err, err


def test_start_server_refuses_a_port_out_of_range(tmp_path):
    (tmp_path / "index.html").write_text("<p>ok</p>")
    with pytest.raises(ValueError, match=r"port 70000 is not a whole number in \[0, 65535\]; choose another --port"):
        server_lib.start_server(tmp_path, 70000)


def _stderr_until(capfd, text, seconds=10):
    """Everything the server thread writes to stderr, read until `text` shows (or the time is up)."""
    err, deadline = "", time.time() + seconds
    while text not in err and time.time() < deadline:
        time.sleep(0.05)
        err += capfd.readouterr().err
    return err


def _get(port, path, read=4096, reset=False):
    """A raw GET; with `reset` the socket is closed with RST (SO_LINGER 0) after `read` bytes."""
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = client.recv(read)
    if reset:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    return data


def test_an_aborted_download_is_one_line(tmp_path, capfd):
    (tmp_path / "index.html").write_text("<p>ok</p>")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "group1-shard1of1.bin").write_bytes(b"\0" * (48 << 20))  # far past the socket buffers
    server, _ = server_lib.start_server(tmp_path)
    try:
        capfd.readouterr()
        assert _get(server.server_address[1], "/model/group1-shard1of1.bin", reset=True).startswith(b"HTTP/1.0 200")
        err = _stderr_until(capfd, "closed the connection")
        assert _get(server.server_address[1], "/index.html").startswith(b"HTTP/1.0 200")  # still serving
    finally:
        server.shutdown()
    err += capfd.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.strip() == "widget: client 127.0.0.1 closed the connection during /model/group1-shard1of1.bin", err


def test_another_request_error_is_one_line(tmp_path, capfd, monkeypatch):
    (tmp_path / "index.html").write_text("<p>ok</p>")
    monkeypatch.setattr(server_lib._QuietHandler, "send_head", lambda self: (_ for _ in ()).throw(RuntimeError("disk gone")))
    server, _ = server_lib.start_server(tmp_path)
    try:
        capfd.readouterr()
        _get(server.server_address[1], "/index.html")
        err = _stderr_until(capfd, "disk gone")
    finally:
        server.shutdown()
    assert err.strip() == "widget: error answering /index.html to 127.0.0.1: RuntimeError: disk gone", err


# ---------------------------------------------------------------- the seed range

def test_seed_limit_has_one_value():
    assert cli_args.SEED_MAX == sampling.SEED_MAX == 2**32 - 1


@pytest.mark.parametrize("argv", [["sample", "--out", "x", "--seed", "4294967296"],
                                  ["interpolate", "--seed-a", "0", "--seed-b", "4294967296", "--out", "x.png"]])
def test_a_seed_past_the_range_is_refused_by_argparse(argv, capsys):
    err = _argparse_exit(capsys, argv)
    assert "\n" not in err and "--seed" in err and "must be in [0, 4294967295], got 4294967296" in err, err


def test_seeds_running_past_the_range_with_n_name_seed_and_n(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "load_generator", lambda *a, **k: pytest.fail("the generator was loaded"))
    assert cli.main(["sample", "--seed", "4294967290", "--n", "16", "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, "--seed 4294967290 with --n 16 reaches seed 4294967305", "[0, 4294967295]", "choose --seed 4294967280 or less, or a smaller --n")
    assert not (tmp_path / "out").exists()


def test_evaluate_checks_the_seed_range_before_reading(tmp_path, no_generator, capsys):
    real = _scans(tmp_path / "real", 30)
    assert cli.main(["evaluate", "--run", "any", "--real", str(real), "--out", str(tmp_path / "e.json"), "--seed", "4294967295", "--n", "2"]) == 2
    one_line_error(capsys, "--seed 4294967295 with --n 2 reaches seed 4294967296")
    assert no_generator == []


def test_noise_for_seeds_names_the_seed():
    with pytest.raises(ValueError, match=r"seed 4294967296 is outside the seed range \[0, 4294967295\]; choose --seed"):
        sampling.noise_for_seeds([1, 2**32])
    assert sampling.seed_range(2**32 - 2, 2) == [2**32 - 2, 2**32 - 1]


# ---------------------------------------------------------------- numeric flags

@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("verb", [["sample", "--out", "x"], ["interpolate", "--seed-a", "0", "--seed-b", "1", "--out", "x.png"]])
def test_float_flags_refuse_nan_and_infinity(verb, value, capsys):
    err = _argparse_exit(capsys, [*verb, f"--truncation={value}"])
    assert "\n" not in err and "argument --truncation" in err and value in err, err


# ---------------------------------------------------------------- absl's C++ log level

def _absl_min_log_level(library):
    """absl::MinLogLevel() of the loaded TensorFlow library."""
    with open(library, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as image:
        symbol = bytes(re.search(rb"_ZN4absl\d+lts_\d+11MinLogLevelEv", image).group(0)).decode()
    getter = getattr(ctypes.CDLL(library), symbol)
    getter.restype = ctypes.c_int
    return getter()


def test_absl_logs_follow_tf_cpp_min_log_level(monkeypatch):
    pytest.importorskip("tensorflow")
    library = console.tensorflow_framework()
    if library is None or "tensorflow" not in sys.modules:
        pytest.skip("no TensorFlow framework library")
    before = _absl_min_log_level(library)
    try:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        assert console.quiet_absl_logs() == 3 and _absl_min_log_level(library) == 3  # ERROR lines (remapper failed) hidden
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
        assert console.quiet_absl_logs() == 1 and _absl_min_log_level(library) == 1
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "loud")
        assert console.min_log_level() == 3
    finally:
        console.quiet_absl_logs(before)
