"""Training configuration: one dataclass, named presets, JSON round trip."""
import dataclasses
import json
import math
import os
import pathlib

from covgan_utils.data import dataset
from covgan_utils.util import files


@dataclasses.dataclass
class Config:
    """Everything that defines a training run; written to `config.json` in its run folder."""

    preset: str = "custom"
    # model
    arch: str = "lean"  # "paper" | "lean" | "style" (mapping + modulated convs, residual D) | "fastgan" (SLE G, self-supervised D)
    latent_dim: int = 100
    g_base_width: int = 256  # lean: channels of the 4x4 map
    g_widths: tuple = (128, 64, 32, 16, 8)  # lean: channels after each doubling, 8 -> 128; style/fastgan: 6 widths, 4x4 -> 128
    d_widths: tuple = (16, 32, 64, 128, 256)  # lean/fastgan: channels after each halving, 64 -> 4 (fastgan: 64 -> 8); style: 6, 128 -> 4
    g_noise: bool = False  # lean: per-pixel noise inputs after every convolution (zero-initialised strength)
    w_dim: int = 128  # style: width of the intermediate latent w
    mapping_layers: int = 4  # style: dense layers of the mapping network
    mbstd_group: int = 4  # style: minibatch standard deviation group of the residual discriminator
    recon_weight: float = 1.0  # fastgan: weight of the discriminator's reconstruction loss on real images
    conditional: bool = False  # G and D take the class (index into `classes`); train on every class in `classes`
    upsample: str = "transpose"  # "transpose" (paper) | "resize" (nearest + conv, no checkerboard) | "bilinear"
    g_block_convs: int = 1  # lean: 3x3 convolutions per doubling
    g_out_kernel: int = 1  # lean: kernel of the tanh output convolution (1 or 3)
    d_dropout: float = 0.3
    spectral_norm: bool = False
    # optimisation
    epochs: int = 100
    batch_size: int = 50
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    g_steps: int = 1  # generator steps per discriminator step: 1 (1:1) or 2 (2:1) in the paper
    loss: str = "bce"  # "bce" (paper) | "non-saturating" | "hinge" | "wgan-gp"
    gp_weight: float = 10.0  # wgan-gp
    r1_gamma: float = 0.0  # R1 penalty weight on real images (0 = off)
    r1_every: int = 1  # lazy R1 (StyleGAN2): penalise every k-th step with weight k * r1_gamma
    label_smoothing: float = 0.0  # one-sided: real targets 1 - s (bce / non-saturating)
    ema_decay: float = 0.0  # generator EMA for sampling (0 = off)
    augment: str = ""  # comma list of augment.OPS (DiffAugment: translation, cutout, brightness, contrast) or "ada", the full ADA pipeline
    augment_p: float = 1.0  # fixed augmentation probability (ada_target = 0)
    ada_target: float = 0.0  # adaptive p from r_t = E[sign(D(real))] (0 = off)
    ada_kimg: float = 20.0  # images for p to move by 1
    # guard against divergence (see covgan_utils.training.guard)
    guard: bool = False
    guard_warmup: int = 10  # epochs before the blank / pinned / collapse checks start (non-finite: always)
    guard_patience: int = 3  # consecutive bad epochs before "pinned" or "collapse" trips
    guard_collapse_margin: float = 0.05  # collapse: generated MS-SSIM above the real data's by this much
    guard_lr_factor: float = 0.5  # learning rates are multiplied by this on every trip
    guard_max_trips: int = 5  # the run stops after this many trips
    # data
    classes: tuple = ("CT_COVID",)
    flip: bool = True
    val_fraction: float = dataset.VAL_FRACTION  # the shared patient-level split
    split_seed: int = dataset.SPLIT_SEED
    max_images: int = 0  # 0 = all train-split images
    time_budget_minutes: float = 0.0  # stop after the first epoch that ends past this wall time (0 = none)
    # bookkeeping
    seed: int = 0
    sample_every: int = 10
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    metrics_every: int = 0  # 0 = no metric callback
    metrics_features: str = "auto"  # features of the callback's KID: "inception" (the [fid] extra; sees texture), "domain" (fast; layout only) or "auto" (inception when installed)
    grid_seeds: int = 36

    def replace(self, **changes):
        """Copy with some fields changed (unknown names raise ValueError)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def with_overrides(self, pairs):
        """Copy with `KEY=VALUE` strings applied (the CLI's --set): values parsed by the field's type,
        tuples as comma lists (`g_widths=256,128,64,32,16`), booleans as true/false."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep or key not in fields:
                raise ValueError(f"--set expects KEY=VALUE with KEY a config field, got {pair!r}")
            changes[key] = _parse_value(getattr(self, key), text.strip(), key)
        return self.replace(**changes)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    def save(self, run_dir):
        files.write_text_atomic(pathlib.Path(run_dir) / "config.json", self.to_json() + "\n")

    @classmethod
    def load(cls, run_dir):
        """Config from `<run_dir>/config.json`. Fields it lacks take their defaults; a file that is not
        valid JSON, or holds an unknown field or a value of the wrong type, raises a one-line ValueError
        naming the file and the field."""
        file = pathlib.Path(run_dir) / "config.json"
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: is {run_dir} a run folder?")
        fix = "restore it or start a new run folder"
        try:
            raw = json.loads(file.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"{file}: not valid JSON (not UTF-8 text: {err.reason} at byte {err.start}); {fix}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{file}: not valid JSON ({err.msg}: line {err.lineno} column {err.colno}); {fix}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{file}: expected a JSON object of config fields, got {type(raw).__name__}; {fix}")
        defaults = cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(f"{file}: unknown config field {key!r}, not one of covgan_utils.config.Config's (is {run_dir} a GAN run folder?); "
                                 f"remove the field or {fix}")
            values[key] = checked_value(getattr(defaults, key), value, key, file)
        return cls(**values)


def _parse_value(current, text, key):
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return text.lower() in ("true", "1")
        if isinstance(current, tuple):
            kind = type(current[0]) if current else str
            return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
        return type(current)(text)
    except ValueError:
        raise ValueError(f"--set {key}={text}: expected a value like {current!r}") from None


def _fits(default, value):
    """Whether a JSON value fits a field whose default is `default` (bool, int, float, str or tuple)."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        try:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
        except OverflowError:  # an integer past float range
            return False
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _shown(value, limit=60):
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit] + "..."


def checked_value(default, value, key, file):
    """A JSON value as the type of a field whose default is `default` (lists -> tuples, whole numbers -> float
    where a float is expected); a value of another type raises a one-line ValueError naming the field and the file.
    Shared by the JSON loaders of the project's dataclass configs."""
    kinds = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}
    if isinstance(default, tuple):
        item = default[0] if default else ""
        if not isinstance(value, list) or not all(_fits(item, v) for v in value):
            expected = f"a list of {kinds[type(item)].replace('a ', '', 1)}s like {json.dumps(list(default))}"
            raise ValueError(f"{file}: field {key!r} must be {expected}, got {_shown(value)}; fix it or restore the file")
        return tuple(float(v) if isinstance(item, float) else v for v in value)
    if not _fits(default, value):
        raise ValueError(f"{file}: field {key!r} must be {kinds[type(default)]} like {json.dumps(default)}, got {_shown(value)}; fix it or restore the file")
    return float(value) if isinstance(default, float) else value


# The recommended training recipe that `best`, `gpu`, `quick` and the other model families share:
# non-saturating loss + lazy R1, DiffAugment (translation, cutout) with adaptive probability, generator EMA,
# no discriminator dropout, batch 32, 400 epochs with samples, checkpoints and metrics every 10, divergence guard.
RECIPE = Config(
    d_dropout=0.0, batch_size=32, loss="non-saturating", r1_gamma=0.2, r1_every=4, augment="translation,cutout", ada_target=0.6,
    ema_decay=0.99, epochs=400, sample_every=10, checkpoint_every=10, metrics_every=10, guard=True,
)
# Recommended: the recipe on the lean generator with resize-convolutions (no checkerboard) and a wider discriminator.
BEST = RECIPE.replace(preset="best", upsample="resize", d_widths=(32, 64, 128, 256, 256))
PRESETS = {
    # The paper's recipe (the defaults): its exact DCGAN (287.6M-parameter generator), BCE, Adam 2e-4, batch 50, 1:1, 5000 epochs.
    "paper": Config(preset="paper", arch="paper", epochs=5000, sample_every=50, checkpoint_every=50),
    "best": BEST,
    # GPU: `best` at 4x width (every layer 4x the channels), batch 64; for tools/gpu_run.sh under KERAS_BACKEND=jax.
    # One H100, JAX 0.11.2: 53 ms per step after compilation, 541 epochs in 6.2 minutes (models/release/job.json:
    # the released generator is this run).
    "gpu": BEST.replace(
        preset="gpu", g_base_width=1024, g_widths=(512, 256, 128, 64, 32), d_widths=(128, 256, 512, 1024, 1024), batch_size=64,
        epochs=5000, sample_every=100, checkpoint_every=100, metrics_every=100,
    ),
    # CPU: `best` on a budget, without the guard: recognisable lungs in well under an hour on 2 cores.
    "quick": BEST.replace(preset="quick", epochs=80, sample_every=5, checkpoint_every=5, guard=False),
    # The model families at CPU size, on the same recipe (see the families ablation in docs/RESULTS.md).
    "style": RECIPE.replace(preset="style", arch="style", g_widths=(128, 128, 64, 32, 16, 8), d_widths=(16, 32, 64, 128, 128, 128)),
    "fastgan": RECIPE.replace(preset="fastgan", arch="fastgan", g_widths=(256, 128, 64, 32, 16, 8), r1_gamma=0.0, r1_every=1),  # no R1
    # Seconds: exercises the real code path in tests and CI.
    "smoke": Config(
        preset="smoke", g_base_width=16, g_widths=(8, 8, 4, 4, 4), d_widths=(4, 4, 8, 8, 8), epochs=2, batch_size=10,
        max_images=40, sample_every=1, checkpoint_every=1, grid_seeds=16,
    ),
}
# Seconds, for the other families (tests and CI): the same tiny data and schedule as `smoke`.
PRESETS["smoke-style"] = PRESETS["smoke"].replace(
    preset="smoke-style", arch="style", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8, 8), w_dim=16, mapping_layers=2, d_dropout=0.0,
)
PRESETS["smoke-fastgan"] = PRESETS["smoke"].replace(
    preset="smoke-fastgan", arch="fastgan", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8), d_dropout=0.0,
)


def get_preset(name, **overrides):
    """Named preset, optionally with some fields changed."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def default_preset():
    """`smoke` when $COVGAN_SMOKE=1 (CI), else $COVGAN_PRESET, else `quick`."""
    if os.environ.get("COVGAN_SMOKE") == "1":
        return "smoke"
    return os.environ.get("COVGAN_PRESET", "quick")
