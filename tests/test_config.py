"""The presets: composed from one recipe, yet each exactly the configuration it was before (tests/fixtures/presets.json)."""
import json
import pathlib

import pytest

from covgan_utils import config
from covgan_utils.data import dataset

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "presets.json"
RECIPE_FIELDS = ("loss", "r1_gamma", "r1_every", "augment", "ada_target", "ema_decay", "d_dropout", "batch_size", "metrics_every")


def test_every_preset_is_unchanged():
    expected = json.loads(FIXTURE.read_text())
    assert list(config.PRESETS) == list(expected)
    for name, preset in config.PRESETS.items():
        assert preset.to_json() == json.dumps(expected[name], indent=2), name  # the same text: fields, order and values
        assert preset.preset == name


def test_presets_share_the_recipe():
    best = config.PRESETS["best"]
    for name, own in (("quick", ()), ("style", ()), ("fastgan", ("r1_gamma", "r1_every")), ("gpu", ("batch_size", "metrics_every"))):
        preset = config.PRESETS[name]
        assert [k for k in RECIPE_FIELDS if k not in own and getattr(preset, k) != getattr(best, k)] == [], name
    gpu = config.PRESETS["gpu"]
    assert [w * 4 for w in best.g_widths] == list(gpu.g_widths) and [w * 4 for w in best.d_widths] == list(gpu.d_widths)


def test_presets_round_trip_through_config_json(tmp_path):
    for name, preset in config.PRESETS.items():
        (tmp_path / name).mkdir()
        preset.save(tmp_path / name)
        assert config.Config.load(tmp_path / name) == preset, name


def test_the_split_defaults_are_the_shared_split():
    assert (config.Config().val_fraction, config.Config().split_seed) == (dataset.VAL_FRACTION, dataset.SPLIT_SEED)
    assert all((p.val_fraction, p.split_seed) == (dataset.VAL_FRACTION, dataset.SPLIT_SEED) for p in config.PRESETS.values())


def test_replace_and_get_preset_refuse_unknown_names():
    with pytest.raises(ValueError, match="widths"):
        config.PRESETS["best"].replace(widths=(1,))
    with pytest.raises(ValueError, match="choose from paper, best"):
        config.get_preset("huge")
    assert config.get_preset("quick", epochs=3).epochs == 3 and config.PRESETS["quick"].epochs == 80
