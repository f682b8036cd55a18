import pytest

from covgan_utils import config
from covgan_utils.nets import dcgan
from covgan_utils.training import gan as gan_lib


def test_paper_generator_matches_the_papers_code():
    g = dcgan.build_generator("paper")
    assert g.output_shape == (None, 128, 128, 1)
    assert g.count_params() == pytest.approx(287.6e6, rel=1e-3)
    dense = g.get_layer("dense_out")
    assert dense.kernel.shape == (16384, 16384)  # the "fully dense final layer": ~268M weights
    assert [g.get_layer(f"up{i}_deconv").filters for i in range(5)] == [512, 256, 128, 64, 1]


def test_paper_discriminator_halves_to_4x4():
    d = dcgan.build_discriminator("paper")
    assert d.output_shape == (None, 1)
    assert d.get_layer("down4_conv").output.shape[1:3] == (4, 4)
    assert all(d.get_layer(f"down{i}_drop").rate == 0.3 for i in range(5))
    assert d.count_params() == 17_427_969


@pytest.mark.parametrize("upsample", ["transpose", "resize"])
def test_lean_models_are_small_and_shaped(upsample):
    g = dcgan.build_generator("lean", widths=(64, 32, 16, 8, 8), base_width=128, upsample=upsample)
    d = dcgan.build_discriminator("lean", widths=(8, 16, 32, 64, 128), spectral_norm=True)
    assert g.output_shape == (None, 128, 128, 1) and d.output_shape == (None, 1)
    assert g.count_params() < 2_000_000 and d.count_params() < 500_000
    assert g.layers[-1].kernel_size == (1, 1)  # per-pixel output layer


def test_lean_generator_with_extra_convs_and_bilinear_upsampling():
    g = dcgan.build_generator("lean", widths=(16, 8, 8, 4, 4), base_width=16, upsample="bilinear", block_convs=2, out_kernel=3)
    assert g.output_shape == (None, 128, 128, 1)
    assert g.get_layer("up0_resize").interpolation == "bilinear"
    assert [g.get_layer(f"up{i}_extra1_conv").filters for i in range(5)] == [16, 8, 8, 4, 4]
    assert g.layers[-1].kernel_size == (3, 3)
    with pytest.raises(ValueError, match="out_kernel"):
        dcgan.build_generator("lean", out_kernel=5)


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="choose 'paper' or 'lean'"):
        dcgan.build_generator("huge")
    with pytest.raises(ValueError, match="5 widths"):
        dcgan.build_generator("lean", widths=(8, 8))


def test_paper_gan_takes_a_training_step_on_cpu():
    import numpy as np


    gan = gan_lib.GAN(config.get_preset("paper", batch_size=2))
    gan.compile()
    logs = gan.train_step(np.zeros((2, 128, 128, 1), np.float32))
    assert np.isfinite(float(logs["g_loss"])) and np.isfinite(float(logs["d_loss"]))
    assert int(gan.g_optimizer.iterations.numpy()) == 1


def test_the_machine_description_keeps_the_fields_of_the_shipped_job_and_ablation():
    import json
    import os
    import pathlib

    import keras

    from covgan_utils.util import hardware

    root = pathlib.Path(__file__).resolve().parent.parent
    shipped = json.loads((root / "models" / "release" / "job.json").read_text())  # written under JAX on a GPU
    info = hardware.device_info()
    backend = keras.backend.backend()
    version_key = {"jax": "jax_version", "tensorflow": "tensorflow_version"}[backend]
    expected = {k for k in ("keras_backend", "keras_version", "keras_location", "platform", "devices", "host") if k in shipped} | {version_key}
    assert set(info) == expected and set(info["host"]) == set(shipped["host"])
    assert info["keras_backend"] == backend and info["devices"] and info["host"]["cpu_count"] == os.cpu_count()
    usable, total = hardware.cpu_cores()
    assert 1 <= usable <= total == os.cpu_count() and hardware.cpu_model() == info["host"]["cpu"]
    line = hardware.hardware()  # the ablation cells' "hardware" field and the progression report's machine
    gpus = hardware.gpus_seen()
    if gpus:
        assert all(name in line for _, name in gpus) and info["platform"] == "gpu"
    else:
        assert line.startswith(f"CPU ({usable} ") and line.endswith(f" cores, {info['host']['cpu']})") and info["platform"] == "cpu"
