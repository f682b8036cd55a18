"""One validation layer for configs: every field of every config dataclass declares its type and range, and
a value outside it is refused the same way in code and presets, after `--set`, and in `config.json` on load
and on resume: one line naming the field, its value, the allowed range and the file, before any work."""
import dataclasses
import json
import shutil
import pathlib

import pytest
from conftest import one_line_error

from covgan_utils import cli, config
from covgan_utils.metrics import domain_encoder
from covgan_utils.training import loop
from covgan_utils.util import fields, paths
from covgan_utils.widget import autoencoder, export

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG_CLASSES = (config.Config, autoencoder.AutoencoderConfig, domain_encoder.DomainEncoderConfig, domain_encoder.EncoderSplit,
                  export.ProjectionOptions)

# field=value strings outside the field's range, each with the range text the message must give
BAD = [
    ("batch_size=0", "a whole number in [1, 4096]"),
    ("checkpoint_every=0", "a whole number in [1, 1000000]"),
    ("sample_every=0", "a whole number in [1, 1000000]"),
    ("epochs=-5", "a whole number in [1, 1000000]"),
    ("lr_g=nan", "a finite number in (0, 1]"),
    ("lr_d=inf", "a finite number in (0, 1]"),
    ("lr_g=0", "a finite number in (0, 1]"),
    ("ema_decay=5", "a finite number in [0, 1) (0 = off)"),
    ("beta_2=1", "a finite number in [0, 1)"),
    ("latent_dim=-1", "a whole number in [1, 4096]"),
    ("latent_dim=1000000000", "a whole number in [1, 4096]"),
    ("r1_gamma=-1", "a finite number in [0, 1000000] (0 = off)"),
    ("r1_every=0", "a whole number in [1, 1000]"),
    ("max_images=-1", "a whole number in [0, 10000000] (0 = off)"),
    ("time_budget_minutes=-2", "a finite number in [0, 1000000] (0 = off)"),
    ("metrics_every=-1", "a whole number in [0, 1000000] (0 = off)"),
    ("val_fraction=1", "a finite number in (0, 1)"),
    ("seed=-1", "a whole number in [0, 4294967295]"),
    ("grid_seeds=0", "a whole number in [1, 1024]"),
    ("loss=nope", "one of bce, non-saturating, hinge, wgan-gp"),
    ("arch=vae", "one of paper, lean, style, fastgan"),
    ("upsample=cubic", "one of transpose, resize, bilinear"),
    ("metrics_features=pixels", "one of auto, inception, domain"),
    ("g_out_kernel=2", "one of 1, 3"),
    ("augment=translation,blur", "a comma list of translation, cutout"),
    ("classes=CT_Other", "distinct values, each one of CT_COVID, CT_NonCOVID"),
    ("classes=CT_COVID,CT_COVID", "distinct values, each one of CT_COVID, CT_NonCOVID"),
    ("g_widths=8,8,0,4,4", "each a whole number in [1, 8192]"),
    ("d_dropout=1", "a finite number in [0, 1)"),
    ("guard_lr_factor=0", "a finite number in (0, 1]"),
]
IDS = [pair.partition("=")[0] + "=" + pair.partition("=")[2][:12] for pair, _ in BAD]


def _value(pair):
    """The Python value of a BAD pair, as code would pass it."""
    key, _, text = pair.partition("=")
    default = getattr(config.Config(), key)
    if isinstance(default, tuple):
        return tuple(int(v) if isinstance(default[0], int) else v for v in text.split(","))
    return type(default)(float(text)) if isinstance(default, (int, float)) and not isinstance(default, bool) else text




@pytest.fixture
def models(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path / "models")
    return tmp_path / "models"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_blobs

    return loop.train(config.get_preset("smoke", epochs=1), tmp_path_factory.mktemp("cfg") / "run", images=make_blobs(), verbose=False)


# ---------------------------------------------------------------- every field declares a check

@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_field_of_every_config_declares_its_type_and_range(cls):
    declared = fields.checks(cls)
    assert list(declared) == [f.name for f in dataclasses.fields(cls)]
    assert all(isinstance(check, fields.Check) for check in declared.values())
    defaults = cls()
    for name, check in declared.items():
        assert check.valid(getattr(defaults, name)), name  # the defaults are inside their own ranges


def test_a_field_without_a_check_cannot_be_defined():
    with pytest.raises(TypeError, match="precision declare no check"):
        @fields.checked
        class Grown:  # noqa: F841  (a later field added the old way)
            epochs: int = fields.field(1, fields.Int(1))
            precision: str = "float32"


def test_every_preset_and_every_saved_config_is_inside_the_ranges():
    for name, preset in config.PRESETS.items():
        assert fields.from_json(config.Config, json.loads(preset.to_json()), "preset") == preset, name
    assert config.Config.load(REPO / "models" / "release").preset == "gpu"
    assert config.Config.load(REPO / "tests" / "fixtures" / "before-layout" / "00000-smoke").preset == "smoke"
    assert domain_encoder.DomainEncoderConfig.load(REPO / "models" / "domain_encoder").epochs >= 1
    assert autoencoder.AutoencoderConfig.load(REPO / "tests" / "fixtures" / "before-layout" / "00001-autoencoder-smoke").preset == "smoke"
    for preset in autoencoder.PRESETS:
        assert autoencoder.get_config(preset).epochs >= 1


# ---------------------------------------------------------------- the same check on every way in

@pytest.mark.parametrize("pair, allowed", BAD, ids=IDS)
def test_in_code_and_presets(pair, allowed):
    key = pair.partition("=")[0]
    with pytest.raises(ValueError) as err:
        config.get_preset("smoke", **{key: _value(pair)})
    message = str(err.value)
    assert f"field {key!r}" in message and allowed in message and "\n" not in message, message


@pytest.mark.parametrize("pair, allowed", BAD, ids=IDS)
def test_after_set_on_the_command_line_before_any_work(pair, allowed, models, capsys):
    assert cli.main(["train", "--preset", "smoke", "--set", pair]) == 2
    one_line_error(capsys, f"--set {pair}", allowed)
    assert not models.exists() or not any(p.is_dir() for p in models.iterdir())  # no run folder left behind


@pytest.mark.parametrize("pair, allowed", BAD, ids=IDS)
def test_in_config_json_on_load(pair, allowed, tmp_path):
    key, _, text = pair.partition("=")
    blob = json.loads(config.get_preset("smoke").to_json())
    blob[key] = _value(pair)  # NaN and Infinity are written as JSON's extensions, which the loader reads
    (tmp_path / "config.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError) as err:
        config.Config.load(tmp_path)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "config.json")) and f"{key!r}" in message and allowed in message, message
    assert "\n" not in message and "restore it or start a new run folder" in message


@pytest.mark.parametrize("pair", ["batch_size=0", "lr_g=nan", "ema_decay=5"])
def test_in_config_json_on_resume_and_the_run_is_kept(pair, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    key, _, text = pair.partition("=")
    blob = json.loads((run / "config.json").read_text())
    blob[key] = float(text) if key != "batch_size" else int(text)
    (run / "config.json").write_text(json.dumps(blob))
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert cli.main(["train", "--run-dir", str(run), "--resume", "--epochs", "2"]) == 2
    one_line_error(capsys, str(run / "config.json"), f"field {key!r}")
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_huge_latent_dim_in_config_json_is_refused_before_sampling(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    blob = json.loads((run / "config.json").read_text())
    blob["latent_dim"] = 10**9
    (run / "config.json").write_text(json.dumps(blob))
    assert cli.main(["sample", "--run", str(run), "--n", "1", "--out", str(tmp_path / "s")]) == 2
    one_line_error(capsys, str(run / "config.json"), "'latent_dim'", "1000000000", "[1, 4096]")
    assert not (tmp_path / "s").exists()


def test_widths_must_fit_the_family_in_every_way_in(tmp_path, capsys, models):
    with pytest.raises(ValueError, match=r"field 'g_widths' has 5 widths, arch 'style' needs 6"):
        config.get_preset("smoke", arch="style")
    assert cli.main(["train", "--preset", "smoke", "--set", "arch=fastgan"]) == 2
    one_line_error(capsys, "--set arch=fastgan", "'g_widths' has 5 widths, arch 'fastgan' needs 6")
    blob = {**json.loads(config.get_preset("smoke").to_json()), "arch": "style"}
    (tmp_path / "config.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError, match=r"config.json: config: field 'g_widths' has 5 widths"):
        config.Config.load(tmp_path)


def test_off_values_and_the_edges_of_ranges_are_accepted():
    edge = config.get_preset("smoke").with_overrides([
        "metrics_every=0", "max_images=0", "time_budget_minutes=0", "r1_gamma=0", "ema_decay=0", "ada_target=0", "augment=",
        "batch_size=1", "lr_g=1", "beta_1=0", "seed=4294967295", "classes=CT_NonCOVID,CT_COVID", "augment=ada,cutout",
    ])
    assert (edge.metrics_every, edge.batch_size, edge.lr_g, edge.augment) == (0, 1, 1.0, "ada,cutout")
    assert edge.classes == ("CT_NonCOVID", "CT_COVID")


def test_the_other_configs_check_their_fields_the_same_way(tmp_path):
    with pytest.raises(ValueError, match=r"autoencoder config field 'batch_size' must be a whole number in \[1, 4096\], got 0"):
        autoencoder.get_config("smoke", batch_size=0)
    with pytest.raises(ValueError, match=r"field 'learning_rate' must be a finite number in \(0, 1\], got NaN"):
        autoencoder.AutoencoderConfig.from_json({"learning_rate": float("nan")}, source="x/config.json")
    with pytest.raises(ValueError, match=r"domain encoder recipe field 'temperature' must be a finite number in \(0, 100\]"):
        domain_encoder.DomainEncoderConfig(temperature=0.0)
    (tmp_path / "config.json").write_text(json.dumps({"recipe": {"split": {"val_fraction": 1.5}}}))
    with pytest.raises(ValueError, match=r"field 'recipe.split.val_fraction' must be a finite number in \(0, 1\), got 1.5"):
        domain_encoder.DomainEncoderConfig.load(tmp_path)
    with pytest.raises(ValueError, match=r"'contrast' must be \(low, high\) with low <= high"):
        domain_encoder.DomainEncoderConfig(contrast=(1.2, 0.8))

