import hashlib
import http.server
import io
import pathlib
import threading
import warnings
import zipfile

import cv2
import numpy as np
import pytest

from covgan_utils import cli
from covgan_utils.data import dataset, decoding, sources
from covgan_utils.util import paths


def _write(folder, name, array):
    ok, buf = cv2.imencode(pathlib.Path(name).suffix, array)
    assert ok
    (folder / name).write_bytes(buf.tobytes())


@pytest.fixture
def dataset_dir(tmp_path, monkeypatch):
    """A tiny COVID-CT-like folder: 4 formats in CT_COVID, metadata with '%' names, junk files."""
    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    covid = tmp_path / "ds" / "CT_COVID"
    covid.mkdir(parents=True)
    ramp = np.tile(np.linspace(0, 255, 200), (200, 1)).astype(np.uint8)  # left dark, right bright
    _write(covid, "p1_0.png", ramp)  # 8-bit grayscale
    _write(covid, "p1_1.png", np.dstack([ramp] * 3))  # RGB
    _write(covid, "p2_0.png", np.dstack([ramp] * 3 + [np.full_like(ramp, 255)]))  # RGBA
    _write(covid, "p3_0.png", ramp.astype(np.uint16) * 257)  # 16-bit
    _write(covid, "p3_1.jpg", ramp)  # JPEG
    (tmp_path / "ds" / "COVID-CT-MetaInfo.csv").write_text(
        "File name,Patient ID\np1%0.png,Patient 1\np1%1.png,Patient 1\np2%0.png,Patient 2\np3%0.png,Patient 3\np3%1.jpg,Patient 3\n",
        encoding="latin-1",
    )
    return tmp_path / "ds"


def test_every_format_scales_to_minus_one_one(dataset_dir):
    ds = dataset.load_dataset(dataset_dir, flip=False)
    assert ds.images.shape == (5, 128, 128, 1) and ds.images.dtype == np.float32
    for image in ds.images:
        assert image.min() == pytest.approx(-1.0, abs=0.02)  # black is -1, not squeezed
        assert image.max() == pytest.approx(1.0, abs=0.02)  # white is +1
        assert image[:, 0].mean() < -0.9 and image[:, -1].mean() > 0.9  # the ramp survives resizing
    np.testing.assert_allclose(ds.images[0], ds.images[3], atol=2e-3)  # 16-bit == 8-bit content


def test_paper_scaling_bug_is_not_reproduced():
    raw = np.array([[0, 128, 255]], np.uint8)
    scaled = decoding.preprocess(raw, size=3)
    assert scaled.min() < -0.99 and scaled.max() > 0.99
    paper = (raw / 255.0 - 127.5) / 127.5  # the paper's code: floats in [0, 1], then (x - 127.5) / 127.5
    assert paper.max() < -0.99  # near-black: what the paper trained on


def test_flip_doubles_with_mirrored_copies(dataset_dir):
    plain = dataset.load_dataset(dataset_dir, flip=False)
    both = dataset.load_dataset(dataset_dir, flip=True)
    assert len(both) == 2 * len(plain)
    np.testing.assert_array_equal(both.images[len(plain):], plain.images[:, :, ::-1])
    assert both.flipped.sum() == len(plain)


def test_metadata_percent_names_give_patient_ids(dataset_dir):
    ds = dataset.load_dataset(dataset_dir, flip=False)
    assert list(ds.patients) == ["CT_COVID/Patient 1"] * 2 + ["CT_COVID/Patient 2"] + ["CT_COVID/Patient 3"] * 2


def test_bad_files_are_skipped_with_one_warning_and_left_untouched(dataset_dir):
    covid = dataset_dir / "CT_COVID"
    (covid / "empty.png").write_bytes(b"")
    (covid / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (covid / "notes.txt").write_text("hello")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in covid.iterdir()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = dataset.load_dataset(dataset_dir, flip=False, cache=False)
    named = [w for w in caught if issubclass(w.category, decoding.SkippedFilesWarning)]
    assert len(named) == 1
    for name in ("empty.png", "corrupt.png", "notes.txt"):
        assert name in str(named[0].message)
    assert len(ds) == 5
    assert before == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in covid.iterdir()}


def test_missing_and_empty_folders_raise_clear_errors(tmp_path):
    with pytest.raises(decoding.DataError, match="does not exist.*download"):
        dataset.load_images(tmp_path / "nowhere")
    (tmp_path / "CT_COVID").mkdir()
    with pytest.raises(decoding.DataError, match="no readable image.*download"):
        dataset.load_dataset(tmp_path, cache=False)


def test_cache_makes_second_load_identical(dataset_dir):
    first = dataset.load_dataset(dataset_dir)
    assert list((paths.PROCESSED_DIR).glob("*.npz"))
    second = dataset.load_dataset(dataset_dir)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.patients, second.patients)


def test_release_zips_are_read_in_place(dataset_dir, tmp_path):
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    with zipfile.ZipFile(zipped / "CT_COVID.zip", "w") as zf:
        for p in sorted((dataset_dir / "CT_COVID").iterdir()):
            zf.write(p, f"CT_COVID/{p.name}")
    from_zip = dataset.load_dataset(zipped, flip=False, cache=False)
    from_dir = dataset.load_dataset(dataset_dir, flip=False, cache=False)
    np.testing.assert_array_equal(from_zip.images, from_dir.images)


def test_patient_split_never_straddles():
    patients = np.array([f"p{i // 3}" for i in range(300)])
    train, val = dataset.split_by_patient(patients, 0.2, seed=1)
    assert set(patients[train]).isdisjoint(patients[val])
    assert len(train) + len(val) == 300 and 0.1 < len(val) / 300 < 0.3
    again = dataset.split_by_patient(patients, 0.2, seed=1)
    np.testing.assert_array_equal(train, again[0])
    assert not np.array_equal(val, dataset.split_by_patient(patients, 0.2, seed=2)[1])


def test_real_split_is_patient_level(real_data):
    ds = dataset.load_dataset(real_data, classes=sources.CLASSES)
    train, val = dataset.split_by_patient(ds.patients)
    assert set(ds.patients[train]).isdisjoint(ds.patients[val])
    assert ds.images.shape[1:] == (128, 128, 1)
    assert -1.0 <= ds.images.min() < -0.9 and 0.9 < ds.images.max() <= 1.0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def zip_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("CT_COVID/a.png", cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    (served / "CT_COVID.zip").write_bytes(buf.getvalue())
    handler = lambda *a, **k: _Quiet(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", hashlib.sha256(buf.getvalue()).hexdigest()
    server.shutdown()


def test_download_checks_sha256(zip_server, tmp_path):
    url, digest = zip_server
    dest = tmp_path / "raw"
    (out,) = sources.download(dest, base_url=url, files=("CT_COVID.zip",), sha256={"CT_COVID.zip": digest}, progress=False)
    assert sources.sha256_of(out) == digest
    assert digest in (dest / "SHA256SUMS").read_text()
    assert len(dataset.load_dataset(dest, flip=False, cache=False)) == 1
    with pytest.raises(decoding.DataError, match="SHA-256 mismatch"):
        sources.download(tmp_path / "bad", base_url=url, files=("CT_COVID.zip",), sha256={"CT_COVID.zip": "0" * 64}, progress=False)
    assert not list((tmp_path / "bad").glob("*.zip*"))


def test_download_refuses_plain_http_off_loopback(tmp_path):
    with pytest.raises(decoding.DataError, match="HTTPS only"):
        sources.download(tmp_path, base_url="http://example.org/", progress=False)


# ---------------------------------------------------------------- portable data cache (export_cache)

@pytest.fixture
def scans_and_cache(tmp_path, monkeypatch):
    """Synthetic COVID + non-COVID scans and their export_cache .npz."""
    from widget_fixtures import make_scans

    monkeypatch.setattr(paths, "PROCESSED_DIR", tmp_path / "processed")
    scans = make_scans(tmp_path / "scans", n_patients=3, slices=2)
    return scans, dataset.export_cache(tmp_path / "bundle" / "covid-ct.npz", scans)


def _assert_same(from_cache, from_folder):
    assert from_cache.images.dtype == np.float32 and from_cache.images.shape == from_folder.images.shape
    np.testing.assert_allclose(from_cache.images, from_folder.images, atol=5e-4)  # float16 of [-1, 1]: error <= 2.5e-4
    for field in ("files", "classes", "patients", "flipped"):
        np.testing.assert_array_equal(getattr(from_cache, field), getattr(from_folder, field))


def test_cache_file_holds_both_classes_once_as_float16(scans_and_cache):
    _, cache = scans_and_cache
    with np.load(cache, allow_pickle=False) as z:
        assert str(z["format"]) == dataset.CACHE_FORMAT and int(z["version"]) == dataset.CACHE_FORMAT_VERSION
        assert z["images"].dtype == np.float16 and z["images"].shape == (12, 128, 128, 1)  # 2 classes x 3 patients x 2 slices, no flips
        assert z["files"].dtype.kind == z["classes"].dtype.kind == z["patients"].dtype.kind == "U"
        assert sorted(set(z["classes"])) == list(sources.CLASSES)


@pytest.mark.parametrize("classes", [sources.CLASSES, ("CT_COVID",), ("CT_NonCOVID",), ("CT_NonCOVID", "CT_COVID")])
@pytest.mark.parametrize("flip", [False, True])
def test_cache_loads_like_the_folder(scans_and_cache, classes, flip):
    scans, cache = scans_and_cache
    _assert_same(dataset.load_dataset(cache, classes=classes, flip=flip), dataset.load_dataset(scans, classes=classes, flip=flip, cache=False))


def test_cache_serves_split_locate_and_env(scans_and_cache, monkeypatch):
    scans, cache = scans_and_cache
    for a, b in zip(dataset.load_split(cache, classes=("CT_COVID",), seed=3), dataset.load_split(scans, classes=("CT_COVID",), seed=3)):
        _assert_same(a, b)
    assert sources.find_data_dir(cache) == cache
    monkeypatch.setenv("COVGAN_DATA", str(cache))
    assert sources.find_data_dir() == cache
    assert len(dataset.load_images(flip=True)) == 12  # 6 COVID slices, doubled


def test_export_cache_cli(scans_and_cache, tmp_path, capsys):

    scans, _ = scans_and_cache
    out = tmp_path / "cli" / "cache.npz"
    assert cli.main(["data", "export-cache", str(out), "--data", str(scans)]) == 0
    assert str(out) in capsys.readouterr().out
    _assert_same(dataset.load_dataset(out, flip=False), dataset.load_dataset(scans, flip=False, cache=False))
    assert cli.main(["data", "export-cache", str(tmp_path / "cache.zip"), "--data", str(scans)]) == 2
    assert ".npz" in capsys.readouterr().err


def test_a_file_that_is_not_a_cache_is_a_clear_error(scans_and_cache, tmp_path):
    _, cache = scans_and_cache
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    other = tmp_path / "other.npz"
    np.savez(other, images=np.zeros((1, 128, 128, 1)))
    for bad in (text, npy, other):
        with pytest.raises(decoding.DataError, match=f"{bad.name} is not a COVID-CT data cache.*export-cache"):
            dataset.load_dataset(bad)
    with np.load(cache) as z:
        arrays = dict(z)
    np.savez(tmp_path / "future.npz", **{**arrays, "version": np.array(99)})
    with pytest.raises(decoding.DataError, match="future.npz.*version 99.*export-cache"):
        dataset.load_split(tmp_path / "future.npz")
    with pytest.raises(decoding.DataError, match="data cache .*missing.npz does not exist.*export-cache"):
        dataset.load_dataset(tmp_path / "missing.npz")
    assert issubclass(decoding.DataError, ValueError)
