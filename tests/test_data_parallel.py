"""Data-parallel training (`devices`, `covgan_utils.training.distribute`): under JAX 2 devices give the
training of 1 device at the same global batch (global noise, synchronised BatchNorm, averaged
gradients), a run trained on 2 devices resumes on 1, and device counts that cannot run are refused in
one line. `make test` runs this file under JAX with 2 virtual CPU devices (tests/conftest.py)."""
import keras
import numpy as np
import pytest

from covgan_utils import config
from covgan_utils.training import distribute, loop

JAX = keras.backend.backend() == "jax"
two_devices = pytest.mark.skipif(not JAX or distribute.device_count() < 2, reason="needs the JAX backend with 2 devices (make test sets 2 virtual CPU devices)")
# augmentation, ADA, lazy R1, EMA, 2 G steps: every random draw and branch of the step; BatchNorm in both nets
FULL = {"augment": "translation,cutout", "ada_target": 0.6, "ema_decay": 0.9, "r1_gamma": 1.0, "r1_every": 2, "loss": "non-saturating", "g_steps": 2}


def one_line_error(error, fn, *args, **kwargs):
    """The message of the one-line `error` that fn(*args, **kwargs) raises."""
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value), info.value
    return str(info.value)


class Placement(keras.callbacks.Callback):
    """Records on how many devices the weights live during training."""

    def on_epoch_end(self, epoch, logs=None):
        self.devices = len(self.model.generator.trainable_variables[0].value.sharding.device_set)


def _checkpoint(run, epoch):
    with np.load(run / f"checkpoint-{epoch:06d}.npz") as f:
        return {k: f[k] for k in f.files}


def _assert_equal_training(a, b):
    """Same counters, RNG and checkpoint layout; per group of the state (weights, BN statistics, optimizer
    moments, EMA) the two states differ by at most 1e-3 of its size (2e-2 for the optimizer moments,
    where Adam amplifies the rounding of near-zero gradients): the 2-device program reduces the global
    mean and the BatchNorm sums in another order. A different random stream or per-device BatchNorm
    statistics give differences of the size of the updates themselves."""
    assert a.keys() == b.keys()
    groups = {}
    for key in a:
        if a[key].dtype.kind in "fc":
            groups.setdefault(key.split("/")[0], []).append(key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    rel = {}
    for group, keys in groups.items():
        diff = np.sqrt(sum(((a[k].astype(np.float64) - b[k]) ** 2).sum() for k in keys))
        size = np.sqrt(sum((a[k].astype(np.float64) ** 2).sum() for k in keys)) + 1e-12
        rel[group] = diff / size
    assert all(value <= (2e-2 if group.endswith("opt") else 1e-3) for group, value in rel.items()), rel


@two_devices
def test_two_devices_train_as_one_at_the_same_global_batch(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=1, sample_every=10, **FULL)
    placement = Placement()
    one = loop.train(cfg, tmp_path / "one", images=blob_images, verbose=False)
    two = loop.train(cfg.replace(devices=2), tmp_path / "two", images=blob_images, verbose=False, callbacks=[placement])
    assert placement.devices == 2  # the variables really were replicated over both devices
    _assert_equal_training(_checkpoint(one, 1), _checkpoint(two, 1))
    assert config.Config.load(two).devices == 2


@two_devices
def test_a_run_trained_on_two_devices_resumes_on_one(tmp_path, blob_images):
    cfg = config.get_preset("smoke", epochs=3, loss="non-saturating", d_dropout=0.0)  # the recipe's loss: the paper's clipped BCE jumps where it clips, so rounding grows faster
    whole = loop.train(cfg, tmp_path / "whole", images=blob_images, verbose=False)
    part = loop.train(cfg.replace(epochs=2, devices=2), tmp_path / "part", images=blob_images, verbose=False)
    loop.train(cfg, part, images=blob_images, resume=True, verbose=False)  # devices=1 asked: the resumed epochs run on one
    assert config.Config.load(part).devices == 1
    _assert_equal_training(_checkpoint(whole, 3), _checkpoint(part, 3))


@two_devices
def test_device_counts_that_cannot_run_are_refused(tmp_path, blob_images):
    msg = one_line_error(ValueError, loop.train, config.get_preset("smoke", devices=3), tmp_path / "a", images=blob_images, verbose=False)
    assert "devices=3 but this machine has 2 JAX device(s); use devices=2" in msg and "xla_force_host_platform_device_count=3" in msg
    msg = one_line_error(ValueError, loop.train, config.get_preset("smoke", devices=2, batch_size=9), tmp_path / "b", images=blob_images, verbose=False)
    assert "batch_size=9 does not split over devices=2" in msg
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.skipif(JAX, reason="the TensorFlow backend's refusal")
def test_tensorflow_trains_on_one_device_and_says_so(tmp_path, blob_images):
    msg = one_line_error(ValueError, loop.train, config.get_preset("smoke", devices=2), tmp_path / "run", images=blob_images, verbose=False)
    assert "devices=2: data-parallel training runs on the JAX backend; set KERAS_BACKEND=jax, or devices=1 under tensorflow" == msg
    assert not (tmp_path / "run").exists()


def test_cli_devices_flag(tmp_path, capsys):
    from widget_fixtures import make_scans

    from covgan_utils import cli

    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--preset", "smoke", "--devices", "0"])
    assert info.value.code == 2
    assert "argument --devices: expected `all` or a whole number >= 1 (must be at least 1, got 0)" in capsys.readouterr().err
    scans = make_scans(tmp_path / "scans", n_patients=10)
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "smoke", "--run-dir", str(run), "--data", str(scans), "--devices", "all", "--epochs", "1", "--set", "max_images=20"]) == 0
    assert config.Config.load(run).devices == distribute.device_count()  # `all`: counted when the command runs
