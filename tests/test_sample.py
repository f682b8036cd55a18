import json

import numpy as np
import pytest
from PIL import Image

from covgan_utils import checkpoints, cli, config, runs, sampling
from covgan_utils.metrics import quality
from covgan_utils.training import loop
from covgan_utils.util import paths


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.RandomState(0)
    images = np.tanh(rng.randn(20, 128, 128, 1)).astype(np.float32)
    return loop.train(config.get_preset("smoke", epochs=1), tmp_path_factory.mktemp("r") / "run", images=images, verbose=False)


def test_noise_is_addressed_by_seed():
    z = sampling.noise_for_seeds([3, 7])
    np.testing.assert_array_equal(z[1], np.random.RandomState(7).randn(100).astype(np.float32))


def test_sample_cli_writes_seed_named_8bit_pngs(run, tmp_path):
    assert cli.main(["sample", "--run", str(run), "--n", "3", "--out", str(tmp_path / "s"), "--seed", "5"]) == 0
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == [sampling.MANIFEST, "seed5.png", "seed6.png", "seed7.png"]  # the manifest says which model wrote them
    manifest = json.loads((tmp_path / "s" / sampling.MANIFEST).read_text())
    assert str(run) in manifest["model"] and manifest["weights_sha256"] == checkpoints.weights_digest(runs.load_generator(run))
    image = Image.open(tmp_path / "s" / "seed6.png")
    assert image.mode == "L" and image.size == (128, 128)
    expected = sampling.generate(runs.load_generator(run), [6])[0]
    np.testing.assert_allclose(np.asarray(image) / 127.5 - 1, expected[..., 0], atol=1 / 127.5 + 1e-6)


@pytest.mark.parametrize("mode", ["linear", "slerp"])
def test_interpolation_endpoints_are_the_seed_samples(run, mode):
    g = runs.load_generator(run)
    frames = sampling.interpolate(g, 11, 12, steps=5, mode=mode)
    ends = sampling.generate(g, [11, 12])
    assert frames.shape == (5, 128, 128, 1)
    np.testing.assert_allclose(frames[0], ends[0], atol=1e-5)
    np.testing.assert_allclose(frames[-1], ends[1], atol=1e-5)


def test_slerp_keeps_the_norm_on_the_sphere():
    a, b = sampling.noise_for_seeds([1, 2])
    path = sampling.slerp(a, b, 9)
    norms = np.linalg.norm(path, axis=1)
    assert norms.min() > 0.9 * min(np.linalg.norm(a), np.linalg.norm(b))
    assert np.linalg.norm(sampling.lerp(a, b, 9)[4]) < norms[4]


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_interpolate_cli_writes_strip_or_gif(run, tmp_path, suffix):
    out = tmp_path / f"strip{suffix}"
    assert cli.main(["interpolate", "--run", str(run), "--seed-a", "1", "--seed-b", "2", "--steps", "4", "--out", str(out)]) == 0
    image = Image.open(out)
    if suffix == ".gif":
        assert image.n_frames == 6  # forth and back
    else:
        assert image.size == (4 * 130 - 2, 128)


def test_cli_errors_are_one_line(run, tmp_path, capsys):
    assert cli.main(["sample", "--run", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not exist" in err and "\n" not in err
    assert cli.main(["interpolate", "--run", str(run), "--seed-a", "1", "--seed-b", "2", "--out", str(tmp_path / "x.jpg")]) == 2
    assert cli.main(["train", "--preset", "nope"]) == 2
    assert cli.main(["data", "locate", "--data", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_rejects_bad_argument_types():
    with pytest.raises(SystemExit) as exc:
        cli.main(["sample", "--n", "many", "--out", "x"])
    assert exc.value.code == 2


def test_release_export_round_trip_is_float16_and_code_free(run, tmp_path):

    weights = runs.export_release(run, tmp_path / "release")
    with np.load(weights, allow_pickle=False) as z:  # plain arrays only
        assert {z[k].dtype for k in z.files} <= {np.dtype("float16"), np.dtype("int64"), np.dtype("uint32"), np.dtype("int32")}
    g = runs.load_release(tmp_path / "release")
    expected = sampling.generate(runs.load_generator(run), [0, 1])
    np.testing.assert_allclose(sampling.generate(g, [0, 1]), expected, atol=0.02)
    with pytest.raises(FileNotFoundError, match="no released model"):
        runs.load_release(tmp_path / "nothing")


def test_committed_release_loads_by_default_and_is_not_blank():

    if not (paths.RELEASE_DIR / "generator.npz").is_file():
        pytest.skip("no released model in this checkout")
    images = sampling.generate(runs.load_generator(), range(8))  # no run: the released model
    assert images.shape == (8, 128, 128, 1) and -1.0 <= images.min() and images.max() <= 1.0
    assert quality.blank_fraction(images) == 0.0 and quality.duplicate_fraction(images) == 0.0


def test_cli_answers_help_and_bad_arguments_before_importing_keras(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, time\nfrom covgan_utils import cli\nstart = time.time()\n"
        "try:\n    cli.main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('keras' in sys.modules, 'tensorflow' in sys.modules, code, round(time.time() - start, 3))\n"
    )
    for argv, expected_code in ((["--help"], 0), (["sample", "--n", "-1", "--out", str(tmp_path)], 2), (["interpolate", "--seed-a", "1", "--seed-b", "2", "--steps", "1", "--out", "x.png"], 2), (["train", "--minutes", "0"], 2)):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
        keras_loaded, tf_loaded, code_seen, _ = done.stdout.split()[-4:]
        assert (keras_loaded, tf_loaded, code_seen) == ("False", "False", str(expected_code)), (argv, done.stdout, done.stderr)
        if expected_code == 2:
            assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "--help" in done.stderr, done.stderr


def test_cli_keeps_start_up_noise_off_the_terminal(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "covgan_utils", "sample", "--run", str(tmp_path / "missing"), "--n", "2", "--out", str(tmp_path / "o")]
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": ""})
    assert quiet.returncode == 2 and quiet.stderr.strip().count("\n") == 0 and "does not exist" in quiet.stderr, quiet.stderr
