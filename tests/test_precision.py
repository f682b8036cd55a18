"""Mixed precision as a config field: `precision` = float32 | mixed_bfloat16 | mixed_float16 (dynamic loss
scaling). Variables, optimizer state, EMA weights and losses stay float32; checkpoints have the same arrays
whatever the precision (the loss scale is an optional extra group), so a run resumes in another precision;
loaded generators sample in float32."""
import json
import warnings

import keras
import numpy as np
import pytest
from conftest import make_blobs

from covgan_utils import config, runs
from covgan_utils.training import loop
from covgan_utils.training.gan import GAN
from covgan_utils.util import hardware

MIXED = ("mixed_bfloat16", "mixed_float16")


def _train(tmp_path, precision, epochs=1, name=None):
    cfg = config.get_preset("smoke", epochs=epochs, precision=precision, ema_decay=0.9, r1_gamma=0.5, augment="translation")
    return loop.train(cfg, tmp_path / (name or precision), images=make_blobs(), verbose=False)


def _layout(run):
    """{array name: (shape, dtype)} of the newest checkpoint of a run."""
    with np.load(sorted(run.glob("checkpoint-0*.npz"))[-1]) as z:
        return {k: (z[k].shape, str(z[k].dtype)) for k in z.files}


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("precision"), "float32")


@pytest.mark.parametrize("precision", MIXED)
def test_mixed_precision_trains_with_float32_state(precision, float32_run, tmp_path):
    run = _train(tmp_path, precision)
    stats = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(stats[k]) for k in ("d_loss", "g_loss", "d_acc_real", "augment_p"))
    mixed, plain = _layout(run), _layout(float32_run)
    extra = {k for k in mixed if k.startswith(("g_scale/", "d_scale/"))}
    assert extra == (set() if precision == "mixed_bfloat16" else {"g_scale/0000", "g_scale/0001", "d_scale/0000", "d_scale/0001"})
    assert {k: v for k, v in mixed.items() if k not in extra} == plain  # the same arrays, shapes and dtypes
    assert {dtype for shape, dtype in mixed.values() if dtype.startswith(("float", "bfloat"))} == {"float32"}


@pytest.mark.parametrize("precision", MIXED)
def test_models_compute_in_the_policy_and_keep_float32_variables(precision):
    gan = GAN(config.get_preset("smoke", precision=precision, ema_decay=0.9))
    half = precision.replace("mixed_", "")
    convs = [layer for layer in gan.generator.layers + gan.discriminator.layers if layer.weights and "conv" in layer.name]
    assert convs and {layer.compute_dtype for layer in convs} == {half}
    assert {v.dtype for v in gan.generator.variables + gan.discriminator.variables if "int" not in v.dtype} == {"float32"}
    assert {layer.compute_dtype for layer in gan.ema_generator.layers if layer.weights} == {"float32"}  # samples in float32


def test_a_run_resumes_in_another_precision_and_samples_in_float32(tmp_path):
    run = _train(tmp_path, "mixed_bfloat16", epochs=1, name="run")
    blob = json.loads((run / "config.json").read_text())
    blob["precision"] = "mixed_float16"  # the state carries over: Adam's arrays do not depend on the precision
    (run / "config.json").write_text(json.dumps(blob))
    loop.train(config.Config.load(run).replace(epochs=2), run, images=make_blobs(), resume=True, verbose=False)
    assert [json.loads(line)["epoch"] for line in (run / "stats.jsonl").read_text().splitlines()] == [1, 2]
    generator = runs.load_generator(run)
    assert {layer.compute_dtype for layer in generator.layers if layer.weights} == {"float32"}
    with np.load(run / "checkpoint-000002.npz") as z:
        assert float(z["d_scale/0000"]) > 0 and np.isfinite(float(z["g_scale/0000"]))


def test_precision_is_a_checked_field():
    assert config.Config().precision == "float32" and all(p.precision == "float32" for p in config.PRESETS.values())
    with pytest.raises(ValueError, match=r"field .precision. must be one of float32, mixed_bfloat16, mixed_float16, auto"):
        config.get_preset("smoke", precision="float16")


def test_training_under_jax_on_a_cpu_warns_once(monkeypatch):
    monkeypatch.setattr(hardware, "_warned", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hardware.warn_if_slow_backend()
        hardware.warn_if_slow_backend()
    slow = [w for w in caught if issubclass(w.category, hardware.SlowBackendWarning)]
    assert len(slow) == (1 if keras.backend.backend() == "jax" and not hardware.gpus_seen() else 0)
    assert all("KERAS_BACKEND=tensorflow" in str(w.message) for w in slow)


def test_auto_is_this_machines_fast_precision_and_config_json_records_it(tmp_path):
    run = loop.train(config.get_preset("smoke", epochs=1, precision="auto"), tmp_path / "run", images=make_blobs(), verbose=False)
    assert config.Config.load(run).precision == hardware.fast_precision() != "auto"


@pytest.mark.parametrize("gpus, flags, expected", [
    ([(9, 0)], set(), "mixed_bfloat16"),  # H100 / H200
    ([(8, 0), (8, 6)], set(), "mixed_bfloat16"),
    ([(7, 5)], {"avx512_bf16"}, "mixed_float16"),  # T4: float16 tensor cores, no bfloat16
    ([], {"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ([], {"amx_bf16"}, "mixed_bfloat16"),
    ([], {"avx2", "avx512f"}, "float32"),
])
def test_the_fast_precision_follows_the_device(gpus, flags, expected, monkeypatch):
    monkeypatch.setattr(hardware, "gpu_capabilities", lambda: gpus)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.fast_precision() == expected
