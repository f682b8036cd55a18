"""The calibration ladder: degradations change what they claim to, and score worse than the floor."""
import json

import numpy as np

from covgan_utils import cli
from covgan_utils.metrics import calibration


def test_degradations_keep_shape_and_range(blob_images):
    for name, fn in calibration.DEGRADATIONS.items():
        out = fn(blob_images)
        assert out.shape == blob_images.shape and out.dtype == np.float32, name
        assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6, name
        assert not np.allclose(out, blob_images), name
    blocks = calibration.downsample(blob_images, 64, "nearest")
    assert np.array_equal(blocks[:, 0::2, 0::2], blocks[:, 1::2, 1::2])  # 2x2 blocks of equal pixels
    assert calibration.blur(blob_images, 1.0).std() < blob_images.std()


def test_ladder_scores_degradations_worse_than_floor(blob_images):
    train, val = blob_images[:20], blob_images[20:]
    report = calibration.ladder(train, val, features="domain", n=20, degradations=["noise 0.15", "32x32 bilinear"])
    rows = report["rows"]
    assert list(rows) == ["real (floor)", "noise 0.15", "32x32 bilinear"] and report["n_probe"] == 20
    assert rows["noise 0.15"]["kid"]["mean"] > rows["real (floor)"]["kid"]["mean"]
    table = calibration.table([report, report], extra={"a generator": [rows["noise 0.15"]] * 2})
    assert "| a generator |" in table and "| real (floor) |" in table
    assert table.splitlines()[0].count("domain KID") == 2 and table.splitlines()[2].count("|") == 10


def test_calibrate_cli_on_real_scans(real_data, tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert cli.main(["calibrate", "--n", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["features"] == "domain" and report["n_real"] == 20
    assert report["rows"]["noise 0.15"]["kid"]["mean"] > report["rows"]["real (floor)"]["kid"]["mean"]
    assert "| 32x32 bilinear |" in capsys.readouterr().out
    assert cli.main(["calibrate", "--n", "3", "--out", str(out)]) == 2
