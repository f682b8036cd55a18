"""Bad-input corpus (issue "Reliability", item 4), run against the data loader, every CLI verb that reads
user files, the .keras loading path and the widget server.

Every case expects one of two answers: exit code 2 with ONE `error: ...` line naming the file or value
(and, where there is one, the fix), or, where a loader skips unreadable files, a one-line
`SkippedFilesWarning` naming each file and its reason. Never a traceback, and nothing in the source
folder changes (fingerprints before and after each case). The corpus is built at test time
(tests/bad_inputs.py); `CASES` lists every case and `test_corpus_size` checks the count the README gives.
"""
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import warnings

import cv2
import numpy as np
import pytest

# hypothesis keeps a cache of the project's constants; keep it out of the checkout (read when first used)
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "covgan-hypothesis"))
import bad_inputs  # noqa: E402
from bad_inputs import IMAGE_CASES, snapshot  # noqa: E402
from conftest import make_blobs  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from widget_fixtures import make_scans  # noqa: E402

from covgan_utils import checkpoints, cli, config, runs
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.training import loop
from covgan_utils.util import paths
from covgan_utils.widget import autoencoder
from covgan_utils.widget import server as server_lib

REPO = pathlib.Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- shared inputs (built once per module)

@pytest.fixture(autouse=True)
def _outputs_in_tmp(tmp_path, monkeypatch):
    """Nothing is written into the checkout: data cache, models/ and the release folder live in tmp."""
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(paths, "RELEASE_DIR", tmp_path / "models" / "release")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Good inputs to copy and damage: synthetic scans, a 1-epoch smoke run, its release, an autoencoder run."""
    root = tmp_path_factory.mktemp("shared")
    scans = make_scans(root / "scans", n_patients=2)
    run = loop.train(config.get_preset("smoke", epochs=1), root / "run", images=make_blobs(), verbose=False)
    rel = root / "release"
    runs.export_release(run, rel)
    ae_config = autoencoder.get_config("smoke")
    ae_run = root / "ae"
    ae_run.mkdir()
    (ae_run / "config.json").write_text(json.dumps(ae_config.to_json()))
    autoencoder.build_autoencoder(ae_config)[0].save(ae_run / autoencoder.MODEL_FILE)
    return {"scans": scans, "run": run, "release": rel, "ae": ae_run, "ae_config": ae_config}


def run_cli(capfd, *argv):
    """`python -m covgan_utils ARGV` in-process -> (exit code, stdout, stderr, warnings raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as exit:  # argparse errors
            code = exit.code
    out, err = capfd.readouterr()
    return code, out, err, caught


def assert_refused(code, err, *expected):
    """Exit code 2 and exactly one `error: ...` line holding every `expected` text (file, value, fix)."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in expected:
        assert str(text) in lines[0], f"{text!r} not in {lines[0]!r}"


def one_line_warnings(caught, category):
    messages = [str(w.message) for w in caught if issubclass(w.category, category)]
    assert all("\n" not in m for m in messages), messages
    return messages


# ---------------------------------------------------------------- 1. image files: the data loader

@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_image_corpus(case, shared, tmp_path, capfd, monkeypatch):
    """One bad (or merely unusual) file among good scans: `data describe` (load_dataset) and
    `load_folder` (evaluate's --generated/--real) skip it with a warning naming it, or load it."""
    name, outcome, reason = IMAGE_CASES[case]
    if case == "unreadable-chmod-000" and os.geteuid() == 0:
        pytest.skip("running as root, which reads a chmod 000 file")
    folder = pathlib.Path(shutil.copytree(shared["scans"], tmp_path / "data"))
    covid = folder / "CT_COVID"
    good = [bad_inputs.header_pixels(p) for p in sorted(covid.iterdir())]  # pixels of each good scan
    bad = bad_inputs.write_image_case(covid, case)
    n_good = len(good)
    decoded = []  # pixels of every image OpenCV decodes (0 when it returns nothing)
    imdecode = cv2.imdecode

    def spy(buf, flags):
        image = imdecode(buf, flags)
        decoded.append(0 if image is None else image.shape[0] * image.shape[1])
        return image

    monkeypatch.setattr(cv2, "imdecode", spy)
    before = snapshot(folder)
    code, out, err, caught = run_cli(capfd, "data", "describe", "--data", folder, "--classes", "CT_COVID")
    with warnings.catch_warnings(record=True) as caught_folder:
        warnings.simplefilter("always")
        images = dataset.load_folder(covid)
    assert snapshot(folder) == before
    assert code == 0 and err.strip() == "", err  # no traceback, no libpng / libjpeg noise
    # the work done: each of the two reads decodes every good scan once, and the bad file only when its damage
    # is in the pixel data; every other case (the 400-million-pixel files among them) is refused undecoded
    per_read = good + ([bad_inputs.header_pixels(bad) if bad_inputs.DECODED_CASES[case] else 0] if case in bad_inputs.DECODED_CASES else [])
    assert sorted(decoded) == sorted(per_read * 2), (case, decoded)
    assert max(decoded) <= decoding.MAX_IMAGE_PIXELS
    messages = one_line_warnings(caught + caught_folder, decoding.SkippedFilesWarning)
    if outcome == "loaded":
        assert messages == [] and len(images) == n_good + 1
        assert images.dtype == np.float32 and np.abs(images).max() <= 1.0
    else:
        assert len(messages) == 2 and len(images) == n_good
        for message in messages:
            assert f"{name} ({reason}" in message and "remove or replace them" in message, message


# ---------------------------------------------------------------- 2. data folders and caches: every verb that loads data

def _data_input(kind, tmp):
    """A data argument of kind `kind` under tmp -> its path."""
    target = tmp / f"in-{kind}"
    if kind == "missing":
        return target
    if kind == "empty":
        (target / "CT_COVID").mkdir(parents=True)
        (target / "CT_NonCOVID").mkdir()
    elif kind == "no-classes":
        target.mkdir()
        (target / "README.txt").write_text("scans go here\n")
    elif kind == "only-bad":
        for cls in sources.CLASSES:
            (target / cls).mkdir(parents=True)
            bad_inputs.write_image_case(target / cls, "zero-byte")
            bad_inputs.write_image_case(target / cls, "truncated-png")
    elif kind == "corrupt-zip":
        target.mkdir()
        (target / "CT_COVID.zip").write_bytes(b"PK\x03\x04 this is not a zip archive")
    elif kind == "garbage-cache":
        target = tmp / "garbage.npz"
        target.write_bytes(b"\x93NUMPY garbage")
    elif kind == "zero-byte-cache":
        target = tmp / "empty.npz"
        target.write_bytes(b"")
    elif kind == "symlink-loop":
        os.symlink(target.name, target)
    return target


HOW_TO_GET, HOW_TO_CACHE = "data download", "data export-cache"
# id, data kind, argv ({D}: the data argument, {T}: tmp, {S}: good scans, {R}: the good run), expected texts
DATA_CASES = [
    ("describe-empty-folder", "empty", ["data", "describe", "--data", "{D}"], ["no readable image", "{D}", HOW_TO_GET]),
    ("describe-missing-folder", "missing", ["data", "describe", "--data", "{D}"], ["{D} does not exist", HOW_TO_GET]),
    ("locate-folder-without-classes", "no-classes", ["data", "locate", "--data", "{D}"], ["{D} holds no CT_COVID/", HOW_TO_GET]),
    ("describe-only-unreadable-files", "only-bad", ["data", "describe", "--data", "{D}"], ["no readable image", "{D}", HOW_TO_GET]),
    ("describe-corrupt-zip", "corrupt-zip", ["data", "describe", "--data", "{D}"], ["{D}/CT_COVID.zip is not a readable zip file", HOW_TO_GET]),
    ("describe-garbage-cache", "garbage-cache", ["data", "describe", "--data", "{D}"], ["{D} is not a COVID-CT data cache", HOW_TO_CACHE]),
    ("describe-zero-byte-cache", "zero-byte-cache", ["data", "describe", "--data", "{D}"], ["{D} is not a COVID-CT data cache", HOW_TO_CACHE]),
    ("describe-symlink-loop-folder", "symlink-loop", ["data", "describe", "--data", "{D}"], ["{D} does not exist", HOW_TO_GET]),
    ("export-cache-empty-folder", "empty", ["data", "export-cache", "{T}/out.npz", "--data", "{D}"], ["no readable image", HOW_TO_GET]),
    ("export-real-empty-folder", "empty", ["metrics", "export-real", "{T}/real", "--data", "{D}"], ["no readable image", HOW_TO_GET]),
    ("calibrate-only-unreadable-files", "only-bad", ["calibrate", "--data", "{D}", "--out", "{T}/cal.json"], ["no readable image", HOW_TO_GET]),
    ("train-empty-folder", "empty", ["train", "--preset", "smoke", "--data", "{D}", "--run-dir", "{T}/new"], ["no readable image", HOW_TO_GET]),
    ("train-garbage-cache", "garbage-cache", ["train", "--preset", "smoke", "--data", "{D}", "--run-dir", "{T}/new"], ["{D} is not", HOW_TO_CACHE]),
    ("gpu-job-garbage-cache", "garbage-cache", ["gpu-job", "--preset", "smoke", "--data", "{D}", "--out", "{T}/job"], ["{D} is not", HOW_TO_CACHE]),
    ("evaluate-empty-generated", "empty", ["evaluate", "--generated", "{D}/CT_COVID", "--real", "{S}/CT_COVID", "--out", "{T}/e.json"],
     ["no readable image in {D}/CT_COVID", "put scans there"]),
    ("evaluate-only-unreadable-real", "only-bad", ["evaluate", "--generated", "{S}/CT_COVID", "--real", "{D}/CT_COVID", "--out", "{T}/e.json"],
     ["no readable image in {D}/CT_COVID", "put scans there"]),
    ("evaluate-missing-real", "missing", ["evaluate", "--generated", "{S}/CT_COVID", "--real", "{D}", "--out", "{T}/e.json"], ["{D} does not exist"]),
    ("ablation-curve-empty-folder", "empty", ["ablation", "curve", "--run", "{R}", "--epochs", "1", "--data", "{D}"], ["no readable image", HOW_TO_GET]),
]


def _fill(template, **values):
    return [str(part).format(**values) for part in template]


@pytest.mark.parametrize("kind, argv, expected", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_data_inputs(kind, argv, expected, shared, tmp_path, capfd):
    target = _data_input(kind, tmp_path)
    places = dict(D=target, T=tmp_path, S=shared["scans"], R=shared["run"])
    watched = [p for p in (target, shared["scans"], shared["run"]) if p.is_dir() and not p.is_symlink()]
    before = [snapshot(p) for p in watched]
    code, out, err, caught = run_cli(capfd, *_fill(argv, **places))
    assert_refused(code, err, *_fill(expected, **places))
    assert [snapshot(p) for p in watched] == before
    if kind == "only-bad":  # the skipped files are named too
        messages = one_line_warnings(caught, decoding.SkippedFilesWarning)
        assert messages and all("zero.png (empty file" in m for m in messages)


# ---------------------------------------------------------------- 3. wrong argument values

SEE_HELP = "see `python -m covgan_utils"
ARG_CASES = [  # id, argv, expected texts
    ("sample-n-zero", ["sample", "--n", "0", "--out", "{T}/o"], ["--n: must be at least 1, got 0", SEE_HELP]),
    ("sample-n-negative", ["sample", "--n", "-3", "--out", "{T}/o"], ["--n: must be at least 1, got -3", SEE_HELP]),
    ("sample-n-word", ["sample", "--n", "abc", "--out", "{T}/o"], ["--n: expected a whole number, got 'abc'", SEE_HELP]),
    ("sample-n-fraction", ["sample", "--n", "1.5", "--out", "{T}/o"], ["--n: expected a whole number, got '1.5'", SEE_HELP]),
    ("sample-seed-negative", ["sample", "--seed", "-1", "--out", "{T}/o"], ["--seed: must be at least 0, got -1", SEE_HELP]),
    ("sample-seed-exponent", ["sample", "--seed", "1e3", "--out", "{T}/o"], ["--seed: expected a whole number, got '1e3'", SEE_HELP]),
    ("sample-checkpoint-best-absent", ["sample", "--run", "{R}", "--checkpoint", "best", "--out", "{T}/o"], ["no checkpoint 'best' in {R}"]),
    ("interpolate-steps-one", ["interpolate", "--seed-a", "0", "--seed-b", "1", "--steps", "1", "--out", "{T}/s.png"], ["--steps: must be at least 2, got 1", SEE_HELP]),
    ("interpolate-steps-word", ["interpolate", "--seed-a", "0", "--seed-b", "1", "--steps", "x", "--out", "{T}/s.png"], ["--steps: expected a whole number, got 'x'"]),
    ("interpolate-seed-negative", ["interpolate", "--seed-a", "-5", "--seed-b", "1", "--out", "{T}/s.png"], ["--seed-a: must be at least 0, got -5"]),
    ("interpolate-out-suffix", ["interpolate", "--seed-a", "0", "--seed-b", "1", "--out", "{T}/s.txt"], ["--out must end in .png or .gif, got {T}/s.txt"]),
    ("train-minutes-zero", ["train", "--minutes", "0"], ["--minutes: must be a positive number of minutes, got 0", SEE_HELP]),
    ("train-minutes-negative", ["train", "--minutes", "-2"], ["--minutes: must be a positive number of minutes, got -2"]),
    ("train-minutes-nan", ["train", "--minutes", "nan"], ["--minutes: must be a positive number of minutes, got nan"]),
    ("train-minutes-inf", ["train", "--minutes", "inf"], ["--minutes: must be a positive number of minutes, got inf"]),
    ("train-minutes-word", ["train", "--minutes", "soon"], ["--minutes: expected a number, got 'soon'"]),
    ("train-epochs-zero", ["train", "--epochs", "0"], ["--epochs: must be at least 1, got 0"]),
    ("train-seed-negative", ["train", "--seed", "-1"], ["--seed: must be at least 0, got -1"]),
    ("train-preset-unknown", ["train", "--preset", "huge"], ["unknown preset 'huge'", "choose from"]),
    ("train-set-wrong-type", ["train", "--preset", "smoke", "--set", "epochs=many"], ["--set epochs=many: epochs must be a whole number in [1, 1000000] (like 2)"]),
    ("train-set-unknown-field", ["train", "--preset", "smoke", "--set", "bogus=1"], ["'bogus=1'"]),
    ("evaluate-n-zero", ["evaluate", "--generated", "{S}", "--real", "{S}", "--out", "{T}/e.json", "--n", "0"], ["--n: must be at least 1, got 0"]),
    ("calibrate-n-too-small", ["calibrate", "--n", "5", "--out", "{T}/c.json"], ["--n must be at least 10", "got 5"]),
    ("gpu-job-n-eval-too-small", ["gpu-job", "--data", "{S}", "--out", "{T}/j", "--n-eval", "3"], ["--n-eval: must be at least 8, got 3"]),
    ("gpu-job-minutes-zero", ["gpu-job", "--data", "{S}", "--out", "{T}/j", "--minutes", "0"], ["--minutes: must be a positive number of minutes, got 0"]),
    ("ablation-run-minutes-negative", ["ablation", "run", "--minutes", "-1"], ["--minutes: must be a positive number of minutes, got -1"]),
    ("widget-serve-port-out-of-range", ["widget", "serve", "--port", "70000"], ["--port: must be in [0, 65535], got 70000"]),
    ("widget-export-n-generated-zero", ["widget", "export", "--n-generated", "0"], ["--n-generated: must be at least 1, got 0"]),
    ("release-checkpoint-absent", ["release", "--run", "{R}", "--checkpoint", "999", "--out", "{T}/rel"], ["no checkpoint '999' in {R}"]),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in ARG_CASES], ids=[c[0] for c in ARG_CASES])
def test_argument_values(argv, expected, shared, tmp_path, capfd):
    places = dict(T=tmp_path, S=shared["scans"], R=shared["run"])
    before = snapshot(shared["run"]), snapshot(shared["scans"])
    code, out, err, _ = run_cli(capfd, *_fill(argv, **places))
    assert_refused(code, err, *_fill(expected, **places))
    assert (snapshot(shared["run"]), snapshot(shared["scans"])) == before


# ---------------------------------------------------------------- 4. damaged run folders and releases

def _edit_config(run, **changes):
    blob = json.loads((run / "config.json").read_text())
    blob.update(changes)
    (run / "config.json").write_text(json.dumps(blob))


def _damage(run, kind, shared):
    """Damage a copy of the smoke run -> the file the error must name."""
    cfg, ckpts = run / "config.json", checkpoints.numbered(run)
    if kind == "config-truncated":
        cfg.write_bytes(cfg.read_bytes()[: cfg.stat().st_size // 2])
    elif kind == "config-zero-byte":
        cfg.write_bytes(b"")
    elif kind == "config-binary":
        cfg.write_bytes(b"\xff\xfe\x00\x01 garbage")
    elif kind == "config-not-an-object":
        cfg.write_text("[1, 2, 3]\n")
    elif kind == "config-unknown-field":
        _edit_config(run, bogus_field=1)
    elif kind == "config-wrong-type":
        _edit_config(run, epochs="many")
    elif kind == "config-wrong-list":
        _edit_config(run, g_widths="wide")
    elif kind == "config-nan":
        cfg.write_text(cfg.read_text().replace('"lr_g": 0.0002', '"lr_g": NaN'))
    elif kind == "config-of-an-autoencoder":
        cfg.write_text(json.dumps(shared["ae_config"].to_json()))
    elif kind == "checkpoint-garbage":
        for p in ckpts:
            p.write_bytes(b"this is not a checkpoint")
        return run
    elif kind == "checkpoint-zero-byte":
        ckpts[-1].write_bytes(b"")
        return run
    elif kind == "checkpoint-truncated":
        ckpts[-1].write_bytes(ckpts[-1].read_bytes()[:3000])
        return run
    elif kind == "checkpoint-absent":
        for p in ckpts:
            p.unlink()
        return run
    elif kind == "run-folder-missing":
        shutil.rmtree(run)
        return run
    return cfg


CONFIG_FIX, CHECKPOINT_FIX = "restore it or start a new run folder", "start a new run folder"
DAMAGE_TEXTS = {  # damage -> expected texts besides the named file
    "config-truncated": ["not valid JSON", CONFIG_FIX],
    "config-zero-byte": ["not valid JSON", CONFIG_FIX],
    "config-binary": ["not valid JSON (not UTF-8", CONFIG_FIX],
    "config-not-an-object": ["expected a JSON object of config fields, got list", CONFIG_FIX],
    "config-unknown-field": ["unknown config field 'bogus_field'", CONFIG_FIX],
    "config-wrong-type": ["field 'epochs' must be a whole number in [1, 1000000], got \"many\"", CONFIG_FIX],
    "config-wrong-list": ["field 'g_widths' must be a list of 5 to 6 values, each a whole number in [1, 8192]", "got \"wide\""],
    "config-nan": ["field 'lr_g' must be a finite number in (0, 1]", "got NaN"],
    "config-of-an-autoencoder": ["unknown config field 'hidden'", "a GAN run folder?"],
    "checkpoint-garbage": ["none of its 1 checkpoint-*.npz files loads", CHECKPOINT_FIX],
    "checkpoint-zero-byte": ["none of its 1 checkpoint-*.npz files loads", CHECKPOINT_FIX],
    "checkpoint-truncated": ["none of its 1 checkpoint-*.npz files loads", CHECKPOINT_FIX],
    "checkpoint-absent": ["no checkpoint-*.npz in"],
    "run-folder-missing": ["does not exist"],
}
VERBS = {  # verb -> argv ({R}: the damaged run, {S}: good scans, {T}: tmp)
    "sample": ["sample", "--run", "{R}", "--n", "1", "--out", "{T}/out"],
    "interpolate": ["interpolate", "--run", "{R}", "--seed-a", "0", "--seed-b", "1", "--steps", "2", "--out", "{T}/s.png"],
    "plot": ["plot", "--run", "{R}"],
    "release": ["release", "--run", "{R}", "--out", "{T}/rel"],
    "train-resume": ["train", "--resume", "--run-dir", "{R}", "--data", "{S}"],
    "evaluate": ["evaluate", "--run", "{R}", "--real", "{S}/CT_COVID", "--out", "{T}/e.json", "--n", "8", "--no-baselines"],
    "ablation-curve": ["ablation", "curve", "--run", "{R}", "--epochs", "1", "--n", "8", "--data", "{S}"],
}
RUN_CASES = (
    [(d, v) for d in DAMAGE_TEXTS if d.startswith("config-") for v in ("sample", "train-resume")]
    + [("config-truncated", v) for v in ("interpolate", "plot", "release", "evaluate", "ablation-curve")]
    + [(d, "sample") for d in DAMAGE_TEXTS if d.startswith("checkpoint-")]
    + [("checkpoint-garbage", v) for v in ("interpolate", "release", "train-resume", "evaluate", "ablation-curve")]
    + [("run-folder-missing", v) for v in ("sample", "plot", "release")]
)


@pytest.mark.parametrize("damage, verb", RUN_CASES, ids=[f"{d}-{v}" for d, v in RUN_CASES])
def test_damaged_run_folder(damage, verb, shared, tmp_path, capfd):
    run = pathlib.Path(shutil.copytree(shared["run"], tmp_path / "run"))
    named = _damage(run, damage, shared)
    before = snapshot(run) if run.is_dir() else {}
    code, out, err, caught = run_cli(capfd, *_fill(VERBS[verb], R=run, S=shared["scans"], T=tmp_path))
    if verb == "ablation-curve" and damage.startswith("checkpoint-"):  # asks for epoch 1 itself: that file is named
        assert_refused(code, err, run / "checkpoint-000001.npz", "cannot be loaded")
    else:
        assert_refused(code, err, named, *DAMAGE_TEXTS[damage])
    after = snapshot(run) if run.is_dir() else {}
    assert before.items() <= after.items()  # every file kept as it was (plot may add its figures)
    for message in one_line_warnings(caught, checkpoints.CorruptCheckpointWarning):
        assert "checkpoint-000001.npz" in message


RELEASE_CASES = {  # damage of models/release -> (file the error names, expected texts)
    "generator-garbage": ("generator.npz", ["cannot be loaded", "git checkout models/release"]),
    "generator-truncated": ("generator.npz", ["cannot be loaded", "git checkout models/release"]),
    "config-truncated": ("config.json", ["not valid JSON", CONFIG_FIX]),
    "release-absent": ("generator.npz", ["no released model at", "--run RUN_DIR"]),
}


@pytest.mark.parametrize("verb", ["sample", "interpolate"])
@pytest.mark.parametrize("damage", list(RELEASE_CASES))
def test_damaged_release(damage, verb, shared, tmp_path, capfd):
    rel = paths.RELEASE_DIR
    shutil.copytree(shared["release"], rel)
    gen, cfg = rel / runs.WEIGHTS, rel / "config.json"
    if damage == "generator-garbage":
        gen.write_bytes(b"garbage weights")
    elif damage == "generator-truncated":
        gen.write_bytes(gen.read_bytes()[: gen.stat().st_size // 2])
    elif damage == "config-truncated":
        cfg.write_bytes(cfg.read_bytes()[:30])
    else:
        shutil.rmtree(rel)
        rel.mkdir()
    before = snapshot(rel)
    argv = {"sample": ["sample", "--n", "1", "--out", tmp_path / "out"],
            "interpolate": ["interpolate", "--seed-a", "0", "--seed-b", "1", "--out", tmp_path / "s.png"]}[verb]
    code, out, err, _ = run_cli(capfd, *argv)
    file, texts = RELEASE_CASES[damage]
    assert_refused(code, err, rel / file, *texts)
    assert snapshot(rel) == before


# ---------------------------------------------------------------- 5. .keras files (the widget's autoencoder)

MARKER = "lambda-ran.txt"


def _lambda_model(run, ae_config):
    """An autoencoder.keras whose model holds a Lambda layer that writes a marker file when it runs."""
    import keras

    marker = str(run / MARKER)
    _, encoder, decoder = autoencoder.build_autoencoder(ae_config)
    image = keras.Input((decoding.IMAGE_SIZE, decoding.IMAGE_SIZE, 1), name="image")
    hooked = keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1], name="hook")(image)
    keras.Model(image, decoder(encoder(hooked)), name="autoencoder").save(run / autoencoder.MODEL_FILE)
    (run / MARKER).unlink()  # written while the model was built; must not come back


KERAS_CASES = {  # damage -> (file named, expected texts)
    "lambda-layer": ("autoencoder.keras", ["Lambda layer", "safe_mode", "widget train"]),
    "garbage": ("autoencoder.keras", ["not a .keras zip archive", "widget train"]),
    "truncated": ("autoencoder.keras", ["not a .keras zip archive", "widget train"]),
    "zero-byte": ("autoencoder.keras", ["not a .keras zip archive", "widget train"]),
    "other-model": ("autoencoder.keras", ["not a loadable Keras model", "encoder", "widget train"]),
    "config-truncated": ("config.json", ["not a valid autoencoder config", "widget train"]),
    "model-absent": ("autoencoder.keras", ["no autoencoder.keras in", "widget train"]),
}


@pytest.mark.parametrize("damage", list(KERAS_CASES))
def test_damaged_keras_model(damage, shared, tmp_path, capfd):
    """`widget export` loads autoencoder.keras (the project's only .keras load) with safe_mode=True: a Lambda
    layer is refused without running its code, and a damaged file gives one line naming it."""
    run = pathlib.Path(shutil.copytree(shared["ae"], tmp_path / "00000-autoencoder-smoke"))
    model, cfg = run / autoencoder.MODEL_FILE, run / "config.json"
    if damage == "lambda-layer":
        _lambda_model(run, shared["ae_config"])
    elif damage == "garbage":
        model.write_bytes(b"garbage")
    elif damage == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "zero-byte":
        model.write_bytes(b"")
    elif damage == "other-model":
        import keras

        keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]).save(model)
    elif damage == "config-truncated":
        cfg.write_bytes(cfg.read_bytes()[:20])
    else:
        model.unlink()
    before = snapshot(run)
    code, out, err, _ = run_cli(capfd, "widget", "export", "--autoencoder", run, "--gan", "none", "--out", tmp_path / "w")
    file, texts = KERAS_CASES[damage]
    assert_refused(code, err, run / file if damage != "model-absent" else run, *texts)
    assert snapshot(run) == before and not (run / MARKER).exists()


# ---------------------------------------------------------------- 6. widget: model.json and path traversal

def _model_json_damage(folder, kind):
    model = folder / "model" / "model.json"
    blob = json.loads(model.read_text())
    if kind == "truncated":
        model.write_text(model.read_text()[:25])
    elif kind == "zero-byte":
        model.write_bytes(b"")
    elif kind == "binary":
        model.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    elif kind == "array":
        model.write_text("[]")
    elif kind == "no-weights-manifest":
        del blob["weightsManifest"]
        model.write_text(json.dumps(blob))
    elif kind == "shard-missing":
        (folder / "model" / "group1-shard1of1.bin").unlink()
    elif kind == "shard-outside":
        blob["weightsManifest"][0]["paths"] = ["../../secret.txt"]
        model.write_text(json.dumps(blob))
    elif kind == "model-json-absent":
        model.unlink()
    elif kind == "no-index-html":
        (folder / "index.html").unlink()
    elif kind == "folder-missing":
        shutil.rmtree(folder)


MODEL_JSON_CASES = {  # damage -> expected texts (besides the folder)
    "truncated": ["model.json: not valid JSON", "widget export"],
    "zero-byte": ["model.json: not valid JSON", "widget export"],
    "binary": ["model.json: not valid JSON", "widget export"],
    "array": ["model.json: not a TF.js graph model", "widget export"],
    "no-weights-manifest": ["model.json: not a TF.js graph model", "widget export"],
    "shard-missing": ["group1-shard1of1.bin is missing", "widget export"],
    "shard-outside": ["'../../secret.txt' is not a file name inside model/", "widget export"],
    "model-json-absent": ["no model/model.json in", "widget export"],
    "no-index-html": ["no widget in", "widget export"],
    "folder-missing": ["no widget in", "widget export"],
}


@pytest.mark.parametrize("damage", list(MODEL_JSON_CASES))
def test_widget_serve_refuses_a_broken_export(damage, tmp_path, capfd):
    folder = bad_inputs.tfjs_export(tmp_path / "widget")
    (tmp_path / "secret.txt").write_text("SECRET\n")
    _model_json_damage(folder, damage)
    before = snapshot(tmp_path)
    with socket.socket() as probe:  # a free port, in case a regression does serve
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = []  # `widget serve` blocks while it serves: run it in a thread so a regression fails, not hangs
    thread = threading.Thread(target=lambda: result.append(run_cli(capfd, "widget", "serve", "--dir", folder, "--port", port)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert result, f"widget serve is serving the broken export {folder}"
    code, out, err, _ = result[0]
    assert_refused(code, err, folder, *MODEL_JSON_CASES[damage])
    assert snapshot(tmp_path) == before


TRAVERSAL_PATHS = [
    "/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/%2E%2E%2Fsecret.txt",
    "/.%2e/secret.txt", "/%252e%252e/secret.txt", "/..%5csecret.txt", "/..\\secret.txt", "/model/../../secret.txt",
    "/model/%2e%2e/%2e%2e/secret.txt", "//../secret.txt", "/....//secret.txt", "/%c0%ae%c0%ae/secret.txt",
    "/link-out.txt", "/model/link-out.txt", "/secret.txt%00.html", "/%ed%a0%80", "/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A widget export served by `server_lib.start_server`, a secret next to it and symlinks pointing out."""
    root = tmp_path_factory.mktemp("serve")
    (root / "secret.txt").write_text("SECRET\n")
    folder = bad_inputs.tfjs_export(root / "widget")
    os.symlink(root / "secret.txt", folder / "link-out.txt")
    os.symlink("../../secret.txt", folder / "model" / "link-out.txt")
    server, url = server_lib.start_server(folder)
    yield root, server.server_address[1]
    server.shutdown()


def _raw_get(port, path):
    """GET `path` exactly as written (http.client does not normalise it) -> (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", TRAVERSAL_PATHS)
def test_widget_server_path_traversal(path, served, capfd):
    root, port = served
    before = snapshot(root)
    status, body = _raw_get(port, path)
    assert status in (400, 403, 404) and b"SECRET" not in body
    assert _raw_get(port, "/model/model.json")[0] == 200  # still serving, inside the folder
    assert snapshot(root) == before
    assert "Traceback" not in capfd.readouterr().err


def test_widget_server_raw_bytes_in_the_request_line(served, capfd):
    """Bytes http.client would not send (non-ASCII, NUL) on a raw socket: answered, never a traceback."""
    root, port = served
    for line in (b"GET /\xff\xfe/../secret.txt HTTP/1.0", b"GET /a\x00b HTTP/1.0", b"GET /../../secret.txt HTTP/1.0"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(line + b"\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        assert reply.split(b" ")[1] in (b"400", b"403", b"404") and b"SECRET" not in reply
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------- 7. fuzz: decode_image never raises

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SEED_PNG = bad_inputs.encode(bad_inputs.scan((48, 40)))
SEED_JPEG = bad_inputs.encode(bad_inputs.scan((48, 40)), ".jpg")


def _mutated(seed):
    """Strategy: `seed` with 1-8 byte flips, overwrites, insertions, deletions or a truncation, half of them in the header."""
    position = st.one_of(st.integers(0, 63), st.integers(0, len(seed) - 1))
    edit = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]), position, st.integers(0, 255))

    def apply(edits):
        out = bytearray(seed)
        for op, at, value in edits:
            at = min(at, max(len(out) - 1, 0))
            if op == "flip" and out:
                out[at] ^= 1 << (value % 8)
            elif op == "set" and out:
                out[at] = value
            elif op == "insert":
                out[at:at] = bytes([value]) * (1 + value % 4)
            elif op == "delete":
                del out[at:at + 1 + value % 16]
            elif op == "truncate":
                del out[at:]
        return bytes(out)

    return st.lists(edit, min_size=1, max_size=8).map(apply)


def _decoded_or_none(blob):
    result = decoding.decode_image(blob)
    assert result is None or (isinstance(result, np.ndarray) and result.shape == (128, 128) and result.dtype == np.float32
                               and np.all(np.abs(result) <= 1.0))


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_decode_random_bytes(blob):
    _decoded_or_none(blob)


@FUZZ
@given(_mutated(SEED_PNG))
def test_fuzz_decode_mutated_png(blob):
    _decoded_or_none(blob)


@FUZZ
@given(_mutated(SEED_JPEG))
def test_fuzz_decode_mutated_jpeg(blob):
    _decoded_or_none(blob)


# ---------------------------------------------------------------- 8. the real command line, in a subprocess

def _python_m(args, home, timeout=120):
    env = {**os.environ, "COVGAN_HOME": str(home), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "covgan_utils", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_subprocess_skips_bad_files_without_noise(shared, tmp_path):
    folder = pathlib.Path(shutil.copytree(shared["scans"], tmp_path / "data"))
    for case in ("truncated-png", "truncated-jpeg", "corrupt-png-body", "huge-png-20000x20000"):
        bad_inputs.write_image_case(folder / "CT_COVID", case)
    before = snapshot(folder)
    proc = _python_m(["data", "describe", "--data", folder], tmp_path / "home")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "libpng" not in proc.stderr and "Corrupt JPEG" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "SkippedFilesWarning" in line]
    assert len(warned) == 1 and all(IMAGE_CASES[c][0] in warned[0] for c in ("truncated-png", "huge-png-20000x20000"))
    assert snapshot(folder) == before


def test_cli_subprocess_refuses_a_broken_model_json(tmp_path):
    folder = bad_inputs.tfjs_export(tmp_path / "widget")
    _model_json_damage(folder, "truncated")
    proc = _python_m(["widget", "serve", "--dir", folder, "--port", "8765"], tmp_path / "home", timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(f"error: {folder / 'model' / 'model.json'}: not valid JSON")


# ---------------------------------------------------------------- the count

CASES = (
    [f"image:{c}" for c in IMAGE_CASES]
    + [f"data:{c[0]}" for c in DATA_CASES]
    + [f"argument:{c[0]}" for c in ARG_CASES]
    + [f"run:{d}:{v}" for d, v in RUN_CASES]
    + [f"release:{d}:{v}" for d in RELEASE_CASES for v in ("sample", "interpolate")]
    + [f"keras:{c}" for c in KERAS_CASES]
    + [f"widget-export:{c}" for c in MODEL_JSON_CASES]
    + [f"traversal:{p}" for p in TRAVERSAL_PATHS] + ["traversal:raw-bytes"]
    + ["fuzz:random-bytes", "fuzz:mutated-png", "fuzz:mutated-jpeg"]
    + ["subprocess:data-describe", "subprocess:widget-serve"]
)


def test_corpus_size():
    """CASES counts the cases; the README's "Bad-input corpus" bullet gives the same number (the chmod 000
    case is skipped when running as root)."""
    assert len(CASES) == len(set(CASES)) >= 150
    bullet = next(line for line in (REPO / "README.md").read_text().splitlines() if "**Bad-input corpus**" in line)
    assert f" {len(CASES)} cases" in bullet, bullet
