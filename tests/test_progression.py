"""Progression against real scans: the report's tables on the real follow-up patients (few steps: a smoke run of the real command)."""
import numpy as np

from covgan_utils import cli
from covgan_utils.studies import progression


def test_nearest_training_image_is_the_pixel_nearest(blob_images):
    targets = blob_images[:3] + 0.01
    np.testing.assert_array_equal(progression.nearest_training_images(targets, blob_images), blob_images[:3])


def test_report_has_both_tables_on_the_real_follow_ups(tmp_path, capsys):
    out = tmp_path / "PROGRESSION.md"
    assert cli.main(["progression", "report", "--out", str(out), "--n-val", "2", "--steps", "6", "--starts", "1"]) == 0
    text = out.read_text()
    assert "## Reconstruction of validation scans" in text and "## Walking between" in text
    recon = [line for line in text.splitlines() if line.startswith("| projection") or line.startswith("| nearest training image")]
    assert len(recon) == 2 and all(line.count("±") == 3 for line in recon)
    encoded = [line for line in text.splitlines() if line.startswith("| trained encoder")]  # the release's cached encoder
    assert len(encoded) == 2 and "then optimisation (1 start x 6 steps)" in encoded[1] and all("outside p99" in line for line in encoded)
    assert "Seconds per image: wall clock on CPU" in text
    follow = [line for line in text.splitlines() if line.startswith("| Patient ")]
    assert [line.split("|")[1].strip() for line in follow] == ["Patient 2"] * 2 + ["Patient 13"] * 2 + ["Patient 23", "Patient 62"] + ["Patient 63"] * 3
    assert "8, 11, 15, 20 | 11 (0.25)" in text and "-10, -5, -2, 2, 7" in text
    assert '"have fever and cough" (1 row)' in text and "unregistered" in text
    cells = [c.strip() for c in follow[0].split("|")[5:-1]]
    assert len(cells) == len(progression.FOLLOWUP_COLUMNS) and all("/" in c for c in cells)
