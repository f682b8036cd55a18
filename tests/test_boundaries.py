"""Outputs owned by the command, operating-system errors and crash leftovers as one-line errors, run
in-process: an output never replaces an input, a failed start leaves no run folder, a half-written log
line is repaired on resume, sample folders say which model wrote them."""
import errno
import json
import shutil
import warnings

import numpy as np
import pytest
from conftest import one_line_error
from PIL import Image

from covgan_utils import cli, config, runs
from covgan_utils.training import loop
from covgan_utils.util import outputs


def _scan(path, value=128):
    Image.fromarray(np.full((64, 64), value, np.uint8), mode="L").save(path)
    return path


@pytest.fixture
def run(tmp_path_factory, blob_images):
    folder = tmp_path_factory.mktemp("runs") / "run"
    return loop.train(config.get_preset("smoke", epochs=1), folder, images=blob_images, verbose=False)




@pytest.mark.parametrize("verb", ["edit", "progress"])
def test_an_output_that_is_an_input_is_refused_and_the_scan_kept(verb, tmp_path, capsys):
    scan, other = _scan(tmp_path / "v.png"), _scan(tmp_path / "w.png", 90)
    before = scan.read_bytes()
    argv = {"edit": ["edit", "--image", str(scan), "--out", str(scan)],
            "progress": ["progress", "--from", str(scan), "--to", str(other), "--out", str(scan)]}[verb]
    assert cli.main(argv) == 2
    one_line_error(capsys, str(scan), "is also an input")
    assert scan.read_bytes() == before


def test_project_never_writes_a_reconstruction_over_a_scan(tmp_path, capsys):
    scan = _scan(tmp_path / "v.png")
    before = scan.read_bytes()
    assert cli.main(["project", "--image", str(scan), "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "is also an input")
    assert scan.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["v.png"]


def test_an_output_inside_the_data_folder_is_refused(tmp_path, monkeypatch, capsys):
    data = tmp_path / "scans"
    (data / "CT_COVID").mkdir(parents=True)
    _scan(data / "CT_COVID" / "a.png")
    monkeypatch.setenv("COVGAN_DATA", str(data))  # where the data search order finds the scans
    assert cli.main(["sample", "--n", "1", "--out", str(data / "CT_COVID" / "more")]) == 2
    one_line_error(capsys, "inside the data folder")
    assert not (data / "CT_COVID" / "more").exists()


@pytest.mark.parametrize("case", ["file-as-folder", "folder-as-file", "parent-is-file", "name-too-long"])
def test_output_paths_are_checked_before_work(case, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    argv = {
        "file-as-folder": ["sample", "--n", "1", "--out", str(tmp_path / "a-file")],
        "folder-as-file": ["interpolate", "--seed-a", "0", "--seed-b", "1", "--out", str(tmp_path / "a-folder")],
        "parent-is-file": ["sample", "--n", "1", "--out", str(tmp_path / "a-file" / "inside")],
        "name-too-long": ["sample", "--n", "1", "--out", str(tmp_path / ("x" * 300))],
    }[case]
    if case == "folder-as-file":
        (tmp_path / "a-folder.png").mkdir()
        argv[-1] = str(tmp_path / "a-folder.png")
    assert cli.main(argv) == 2
    one_line_error(capsys, {"file-as-folder": "is a file", "folder-as-file": "is a folder", "parent-is-file": "is a file, not a folder",
                             "name-too-long": "longer than 255 bytes"}[case])
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_folder_of_another_models_samples_is_refused_unless_overwrite(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert cli.main(["sample", "--run", str(run), "--n", "2", "--out", str(out)]) == 0
    assert cli.main(["sample", "--run", str(run), "--n", "2", "--seed", "2", "--out", str(out)]) == 0  # the same model may add to it
    capsys.readouterr()
    first = (out / "seed0.png").read_bytes()
    assert cli.main(["sample", "--n", "2", "--out", str(out)]) == 2  # the release is another model
    one_line_error(capsys, "holds samples of another model", "--overwrite")
    assert (out / "seed0.png").read_bytes() == first
    assert cli.main(["sample", "--n", "2", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / ".covgan-samples.json").read_text())["model"] == "release"


def test_images_of_unknown_origin_are_not_mixed_with_samples(tmp_path, capsys):
    _scan(tmp_path / "seed0.png")
    assert cli.main(["sample", "--n", "1", "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "unknown model")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.ENAMETOOLONG, errno.EADDRINUSE])
def test_operating_system_errors_are_one_line(code, monkeypatch, tmp_path, capsys):
    def fail(*args, **kwargs):
        raise OSError(code, __import__("os").strerror(code), str(tmp_path / "x.png"))

    monkeypatch.setattr(outputs, "check_output", fail)
    assert cli.main(["interpolate", "--seed-a", "0", "--seed-b", "1", "--out", str(tmp_path / "x.png")]) == 2
    err = one_line_error(capsys, "x.png")
    assert outputs.OS_HINTS[code] in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numbers_that_are_not_numbers_are_refused(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["edit", "--image", str(_scan(tmp_path / "v.png")), f"--strength={value}", "--out", str(tmp_path / "e.png")])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--strength" in err and "finite" in err and err.count("\n") == 1


def test_an_unsupported_backend_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert cli.main(["sample", "--n", "1", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "KERAS_BACKEND=torch is not supported", "tensorflow or jax")
    assert not (tmp_path / "s").exists()


def test_a_training_that_fails_before_its_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    from covgan_utils.util import paths

    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path / "models")
    one = np.zeros((1, 128, 128, 1), np.float32)
    with pytest.raises(ValueError, match="larger than the 1 training images"):
        loop.train(config.get_preset("smoke"), images=one, verbose=False)
    assert list((tmp_path / "models").iterdir()) == [tmp_path / "models" / ".run-numbers.lock"]
    assert runs.latest_run(preset="smoke") is None


def test_a_half_written_last_log_line_is_repaired_on_resume(run, blob_images):
    stats = run / "stats.jsonl"
    with open(stats, "a") as fh:
        fh.write('{"epoch": 2, "d_lo')  # a kill during the write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.train(config.get_preset("smoke", epochs=2), run, images=blob_images, resume=True, verbose=False)
    repaired = [w for w in caught if issubclass(w.category, loop.RepairedLogWarning)]
    assert len(repaired) == 1 and str(stats) in str(repaired[0].message)
    assert [json.loads(line)["epoch"] for line in stats.read_text().splitlines()] == [1, 2]


def test_a_damaged_log_line_before_the_last_names_the_file(run, blob_images):
    stats = run / "stats.jsonl"
    stats.write_text("not json\n" + stats.read_text())
    with pytest.raises(ValueError, match=r"stats.jsonl: line 1 is not JSON"):
        loop.train(config.get_preset("smoke", epochs=2), run, images=blob_images, resume=True, verbose=False)


@pytest.mark.parametrize("where", ["checkpoint", "release"])
def test_weights_that_are_not_numbers_are_refused_before_sampling(where, run, tmp_path, capsys):
    folder = tmp_path / where
    if where == "checkpoint":
        shutil.copytree(run, folder)
        file = sorted(folder.glob("checkpoint-*.npz"))[-1]
    else:
        runs.export_release(run, folder)
        file = folder / runs.WEIGHTS
    with np.load(file) as z:
        arrays = {k: z[k] for k in z.files}
    first = sorted(k for k in arrays if k.startswith(("g/", "ema/")))[0]
    arrays[first] = np.full_like(arrays[first], np.nan if where == "checkpoint" else np.inf)
    np.savez(file, **arrays)
    before = file.read_bytes()
    assert cli.main(["sample", "--run", str(folder), "--n", "2", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, "cannot be loaded" if where == "checkpoint" else "holds NaN or infinite values")
    assert not (tmp_path / "s").exists() and file.read_bytes() == before


def test_export_cache_never_writes_over_the_cache_it_reads(tmp_path, capsys):
    from widget_fixtures import make_scans

    cache = tmp_path / "c.npz"
    assert cli.main(["data", "export-cache", str(cache), "--data", str(make_scans(tmp_path / "scans", n_patients=2))]) == 0
    capsys.readouterr()
    before = cache.read_bytes()
    assert cli.main(["data", "export-cache", str(cache), "--data", str(cache)]) == 2
    one_line_error(capsys, str(cache), "is the data cache the scans are read from")
    assert cache.read_bytes() == before


def test_a_release_into_its_own_run_folder_is_refused(run, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for out in (run, run / "release"):
        assert cli.main(["release", "--run", str(run), "--out", str(out)]) == 2
        one_line_error(capsys, "inside the run folder", "would turn the run into a release")
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before and not runs.is_release(run)


def test_a_symbolic_link_into_the_data_folder_is_the_data_folder(tmp_path, monkeypatch, capsys):
    data = tmp_path / "scans"
    (data / "CT_COVID").mkdir(parents=True)
    _scan(data / "CT_COVID" / "a.png")
    (tmp_path / "link").symlink_to(data / "CT_COVID")
    monkeypatch.setenv("COVGAN_DATA", str(data))
    assert cli.main(["sample", "--n", "1", "--out", str(tmp_path / "link" / "more")]) == 2
    one_line_error(capsys, "inside the data folder")
    assert sorted(p.name for p in (data / "CT_COVID").iterdir()) == ["a.png"]


@pytest.mark.parametrize("argv, text", [
    (["ablation", "report", "--root", "{T}/missing"], "--root {T}/missing does not exist"),
    (["ablation", "report", "--root", "{T}/empty"], "no finished ablation runs under {T}/empty"),
    (["ablation", "evaluate", "--root", "{T}/empty"], "no finished ablation runs under {T}/empty"),
    (["metrics", "export-real", "{T}/real", "--data", "{T}/one-patient"], "holds 8 train and 0 validation COVID scans"),
])
def test_empty_results_are_errors_not_success(argv, text, tmp_path, capsys):
    from widget_fixtures import make_scans

    (tmp_path / "empty").mkdir()
    make_scans(tmp_path / "one-patient", n_patients=1)
    assert cli.main([a.replace("{T}", str(tmp_path)) for a in argv]) == 2
    one_line_error(capsys, text.replace("{T}", str(tmp_path)))
    assert not (tmp_path / "real").exists()  # no empty output folder left behind
