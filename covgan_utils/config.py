"""Training configuration: one dataclass whose every field declares its type and range, named presets, JSON round trip."""
import dataclasses
import json
import os
import pathlib

from covgan_utils.data import dataset, scaling, sources
from covgan_utils.nets import archs
from covgan_utils.util import fields, files


MAX_WIDTH = 8192  # channels of any layer
SEED = fields.Int(0, fields.SEED_MAX)
WIDTH = fields.Int(1, MAX_WIDTH)
LOSSES = ("bce", "non-saturating", "hinge", "wgan-gp", "rpgan")
UPSAMPLES = ("transpose", "resize", "bilinear")
METRIC_FEATURES = ("auto", "inception", "domain")
SCALINGS = scaling.SCALINGS  # how training images are scaled: "full" | "paper-code" (covgan_utils.data.scaling)
# Keras dtype policies (mixed_float16 trains with dynamic loss scaling), or "auto": the fast one of the machine
# (covgan_utils.util.hardware.fast_precision), resolved when training starts and recorded in config.json.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
# Augmentation ops (implemented in covgan_utils.training.augment); the alias "ada" is ADA's pipeline, in ADA's order.
AUGMENT_OPS = ("translation", "cutout", "brightness", "contrast", "xflip", "int_translation", "iso_scale", "rotate",
               "aniso_scale", "frac_translation", "gamma")
# The end values of the schedules over images seen and the value that means "no change" (schedule_kimg sets their length).
SCHEDULED = {"lr_end_ratio": 1.0, "gamma_end_ratio": 1.0, "beta_2_end": 0.0, "augment_p_end": 0.0}
AUGMENT_ALIASES = {"ada": ("xflip", "int_translation", "iso_scale", "rotate", "aniso_scale", "frac_translation",
                           "brightness", "contrast", "gamma", "cutout")}
F = fields.field


@fields.checked
class Config:
    """Everything that defines a training run; written to `config.json` in its run folder. Every field declares
    its type and range (`covgan_utils.util.fields`), checked in code, after --set and on loading config.json."""

    LABEL = "config"

    preset: str = F("custom", fields.Text(100))
    # model
    arch: str = F("lean", fields.Choice(*archs.ARCHS))  # "paper" | "lean" | "style" (mapping + modulated convs, residual D) | "fastgan" (SLE G, self-supervised D) | "r3gan"
    latent_dim: int = F(100, fields.Int(1, 4096))
    g_base_width: int = F(256, WIDTH)  # lean: channels of the 4x4 map
    g_widths: tuple = F((128, 64, 32, 16, 8), fields.Items(WIDTH, 5, 6))  # lean: channels after each doubling, 8 -> 128; style/fastgan/r3gan: 6 widths, 4x4 -> 128
    d_widths: tuple = F((16, 32, 64, 128, 256), fields.Items(WIDTH, 5, 6))  # lean/fastgan: channels after each halving, 64 -> 4 (fastgan: 64 -> 8); style/r3gan: 6, 128 -> 4
    g_noise: bool = F(False, fields.Bool())  # lean: per-pixel noise inputs after every convolution (zero-initialised strength)
    w_dim: int = F(128, fields.Int(1, 4096))  # style: width of the intermediate latent w
    mapping_layers: int = F(4, fields.Int(1, 16))  # style: dense layers of the mapping network
    mbstd_group: int = F(4, fields.Int(1, 1024))  # style: minibatch standard deviation group of the residual discriminator
    d_equalized: bool = F(False, fields.Bool())  # style: the residual discriminator with equalised learning rate (StyleGAN2; its lr 0.0025 needs it)
    blocks_per_stage: int = F(2, fields.Int(1, 16))  # r3gan: residual blocks per resolution (G and D)
    expansion: int = F(2, fields.Int(1, 16))  # r3gan: channels of a residual block's grouped 3x3 convolution, a multiple of its width
    group_width: int = F(16, WIDTH)  # r3gan: channels per group of that convolution (width * expansion must be a multiple)
    recon_weight: float = F(1.0, fields.Float(0.0, 1e6))  # fastgan: weight of the discriminator's reconstruction loss on real images
    conditional: bool = F(False, fields.Bool())  # G and D take the class (index into `classes`); train on every class in `classes`
    upsample: str = F("transpose", fields.Choice(*UPSAMPLES))  # "transpose" (paper) | "resize" (nearest + conv, no checkerboard) | "bilinear"
    g_block_convs: int = F(1, fields.Int(1, 8))  # lean: 3x3 convolutions per doubling
    g_out_kernel: int = F(1, fields.Choice(1, 3))  # lean: kernel of the tanh output convolution (1 or 3)
    d_dropout: float = F(0.3, fields.Float(0.0, 1.0, hi_open=True))
    spectral_norm: bool = F(False, fields.Bool())
    # optimisation
    precision: str = F("float32", fields.Choice(*PRECISIONS))  # training compute: "mixed_*" keeps variables, optimizer state, EMA and losses float32
    devices: int = F(1, fields.Int(1, 4096))  # data-parallel training over this many JAX devices (covgan_utils.training.distribute); checkpoints do not depend on it
    epochs: int = F(100, fields.Int(1, 10**6))
    batch_size: int = F(50, fields.Int(1, 4096))
    lr_g: float = F(2e-4, fields.Float(0.0, 1.0, lo_open=True))
    lr_d: float = F(2e-4, fields.Float(0.0, 1.0, lo_open=True))
    beta_1: float = F(0.5, fields.Float(0.0, 1.0, hi_open=True))
    beta_2: float = F(0.999, fields.Float(0.0, 1.0, hi_open=True))
    g_steps: int = F(1, fields.Int(1, 16))  # generator steps per discriminator step: 1 (1:1) or 2 (2:1) in the paper
    loss: str = F("bce", fields.Choice(*LOSSES))  # "bce" (paper) | "non-saturating" | "hinge" | "wgan-gp" | "rpgan" (relativistic pairing, R3GAN)
    gp_weight: float = F(10.0, fields.Float(0.0, 1e6))  # wgan-gp
    r1_gamma: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # R1 penalty weight on real images (0 = off)
    r2_gamma: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # R2 penalty weight on generated images (0 = off); lazy with R1
    r1_every: int = F(1, fields.Int(1, 1000))  # lazy R1 and R2 (StyleGAN2): penalise every k-th step with weight k * gamma
    lazy_correction: bool = F(False, fields.Bool())  # lazy R1/R2 (r1_every = k > 1): D's learning rate x c, its Adam betas ** c, c = k / (k + 1) (StyleGAN2)
    label_smoothing: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True))  # one-sided: real targets 1 - s (bce / non-saturating)
    ema_decay: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True, off=True))  # generator EMA for sampling (0 = off)
    ema_kimg: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # EMA half-life in thousands of images: decay 0.5 ** (batch / half-life) (0 = ema_decay)
    ema_rampup: float = F(0.0, fields.Float(0.0, 1.0, off=True))  # StyleGAN2-ADA: the half-life is at most ema_rampup * images seen (0 = off)
    # schedules over images seen (R3GAN): a cosine from the start value to the end value over schedule_kimg * 1000 images
    schedule_kimg: float = F(0.0, fields.Float(0.0, 1e7, off=True))  # 0 = no schedule; with ema_kimg the half-life rises from 0 to ema_kimg
    lr_end_ratio: float = F(1.0, fields.Float(0.0, 1e3))  # learning rates at the end, a multiple of lr_g / lr_d (1 = constant)
    gamma_end_ratio: float = F(1.0, fields.Float(0.0, 1e3))  # R1 and R2 weights at the end, a multiple of r1_gamma / r2_gamma (1 = constant)
    beta_2_end: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True, off=True))  # Adam beta_2 at the end (0 = constant beta_2)
    augment_p_end: float = F(0.0, fields.Float(0.0, 1.0, off=True))  # fixed augmentation probability (ada_target = 0) at the end (0 = constant augment_p)
    augment: str = F("", fields.Names(AUGMENT_OPS, tuple(AUGMENT_ALIASES)))  # comma list of AUGMENT_OPS (DiffAugment: translation, cutout, brightness, contrast) or "ada", the full ADA pipeline
    augment_p: float = F(1.0, fields.Float(0.0, 1.0))  # fixed augmentation probability (ada_target = 0)
    ada_target: float = F(0.0, fields.Float(0.0, 1.0, hi_open=True, off=True))  # adaptive p from r_t = E[sign(D(real))] (0 = off)
    ada_kimg: float = F(20.0, fields.Float(0.0, 1e6, lo_open=True))  # images for p to move by 1
    # guard against divergence (see covgan_utils.training.guard)
    guard: bool = F(False, fields.Bool())
    guard_warmup: int = F(10, fields.Int(0, 10**6))  # epochs before the blank / pinned / collapse checks start (non-finite: always)
    guard_patience: int = F(3, fields.Int(1, 10**6))  # consecutive bad epochs before "pinned" or "collapse" trips
    guard_collapse_margin: float = F(0.05, fields.Float(0.0, 1.0))  # collapse: generated MS-SSIM above the real data's by this much
    guard_lr_factor: float = F(0.5, fields.Float(0.0, 1.0, lo_open=True))  # learning rates are multiplied by this on every trip
    guard_max_trips: int = F(5, fields.Int(1, 1000))  # the run stops after this many trips
    guard_watch: bool = F(False, fields.Bool())  # watch only: record every trip in guard.jsonl, but neither roll back nor stop
    # data
    classes: tuple = F(("CT_COVID",), fields.Items(fields.Choice(*sources.CLASSES), 1, len(sources.CLASSES), unique=True))
    flip: bool = F(True, fields.Bool())
    scaling: str = F("full", fields.Choice(*SCALINGS))  # "full": scans in [-1, 1]; "paper-code": the paper's code's near-black [-1, -0.992] (covgan_utils.data.scaling)
    val_fraction: float = F(dataset.VAL_FRACTION, fields.Float(0.0, 1.0, lo_open=True, hi_open=True))  # the shared patient-level split
    split_seed: int = F(dataset.SPLIT_SEED, SEED)
    max_images: int = F(0, fields.Int(0, 10**7, off=True))  # 0 = all train-split images
    time_budget_minutes: float = F(0.0, fields.Float(0.0, 1e6, off=True))  # stop after the first epoch that ends past this wall time (0 = none)
    # bookkeeping
    seed: int = F(0, SEED)
    sample_every: int = F(10, fields.Int(1, 10**6))
    checkpoint_every: int = F(10, fields.Int(1, 10**6))
    keep_checkpoints: int = F(2, fields.Int(1, 1000))
    metrics_every: int = F(0, fields.Int(0, 10**6, off=True))  # 0 = no metric callback
    metrics_features: str = F("auto", fields.Choice(*METRIC_FEATURES))  # features of the callback's KID: "inception" (the [fid] extra; sees texture), "domain" (fast; layout only) or "auto" (inception when installed)
    grid_seeds: int = F(36, fields.Int(1, 1024))

    def check_together(self):
        """Checks between fields: the width lists the family needs, r3gan's groups, the schedules' switches."""
        for name, count in zip(("g_widths", "d_widths"), archs.WIDTH_COUNTS[self.arch]):
            if count and len(getattr(self, name)) != count:
                raise ValueError(f"field {name!r} has {len(getattr(self, name))} widths, arch {self.arch!r} needs {count} "
                                 f"({archs.WIDTH_MEANING[self.arch]})")
        if self.arch == "r3gan":
            for name in ("g_widths", "d_widths"):
                odd = [w for w in getattr(self, name) if (w * self.expansion) % self.group_width]
                if odd:
                    raise ValueError(f"field {name!r}: widths {odd} times expansion {self.expansion} are not multiples of group_width "
                                     f"{self.group_width}; choose widths or a group_width that divides them")
        scheduled = [f for f, off in SCHEDULED.items() if getattr(self, f) != off]
        if scheduled and not self.schedule_kimg:
            raise ValueError(f"{', '.join(scheduled)} set but schedule_kimg is 0 (no schedule); set schedule_kimg or leave them at their defaults")
        if self.ema_rampup and not self.ema_kimg:
            raise ValueError(f"ema_rampup {self.ema_rampup} needs ema_kimg (an EMA by images seen); set ema_kimg or ema_rampup=0")

    def replace(self, **changes):
        """Copy with some fields changed (unknown names, or values out of range, raise a one-line ValueError)."""
        return fields.replace(self, **changes)

    def with_overrides(self, pairs):
        """Copy with `KEY=VALUE` strings applied (the CLI's --set): values parsed and checked by the field's type,
        tuples as comma lists (`g_widths=256,128,64,32,16`), booleans as true/false."""
        return fields.overrides(self, pairs)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2)

    def save(self, run_dir):
        files.write_text_atomic(pathlib.Path(run_dir) / "config.json", self.to_json() + "\n")

    @classmethod
    def load(cls, run_dir):
        """Config from `<run_dir>/config.json`. Fields it lacks take their defaults; a file that is not valid
        JSON, or holds an unknown field or a value of the wrong type or range, raises a one-line ValueError
        naming the file, the field, its value and the allowed range."""
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
        return fields.from_json(cls, raw, file, fix=f"fix the field or {fix}", what="config fields", hint=f" (is {run_dir} a GAN run folder?)")


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
# R3GAN's recipe (Huang et al. 2024) on the r3gan family: the relativistic pairing loss with R1 and R2 at one weight, Adam
# (0, 0.99) at 2e-4, and its cosine schedules over the run (lr to 1/4, gamma to 1/10, EMA half-life rising from 0 to 10 kimg).
# gamma: R3GAN's FFHQ-64 value (2 at batch 256; its CIFAR-10 value scaled by resolution^2 / batch gives about the same)
# scaled by 256 / 32 for batch 32 (ADA's gamma-per-batch rule). R1/R2 lazily every 4th step as the recipe (R3GAN: every
# step) to keep the step near `best`'s; DiffAugment (translation, cutout) with ADA as the recipe, ADA reading the
# logits about their midpoint (`losses.centred`). 400 epochs of the 480 training images at batch 32: 192 kimg.
R3GAN = RECIPE.replace(
    preset="r3gan", arch="r3gan", g_widths=(128, 128, 64, 32, 16, 8), d_widths=(8, 16, 32, 64, 128, 128), blocks_per_stage=1,
    expansion=2, group_width=8, loss="rpgan", r1_gamma=16.0, r2_gamma=16.0, beta_1=0.0, beta_2=0.99, ema_decay=0.0, ema_kimg=10.0,
    schedule_kimg=192.0, lr_end_ratio=0.25, gamma_end_ratio=0.1,
)
PRESETS["r3gan"] = R3GAN
# GPU: 4x the widths, R3GAN's 2 blocks per resolution and group width 16, batch 64 (gamma halved, EMA half-life doubled), as long as
# `gpu`: 5000 epochs of 448 images (7 batches of 64), 2240 kimg. Its float16 generator: 6.0M parameters, 11.4 MiB (tests/test_r3gan.py).
PRESETS["r3gan-gpu"] = R3GAN.replace(
    preset="r3gan-gpu", g_widths=(512, 512, 256, 128, 64, 32), d_widths=(32, 64, 128, 256, 512, 512), blocks_per_stage=2, group_width=16, batch_size=64,
    r1_gamma=8.0, r2_gamma=8.0, ema_kimg=20.0, schedule_kimg=2240.0, epochs=5000, sample_every=100, checkpoint_every=100, metrics_every=100,
)
# StyleGAN2-ADA's own recipe (its "auto" config at 128x128) on the style family at `style`'s widths: lr 0.0025 for G and D, Adam
# (0, 0.99), R1 gamma 0.0002 * 128^2 / 32, lazy every 16 with its lr / beta correction, 2 mapping layers (lr multiplier 0.01, in
# nets.stylegan), the discriminator with equalised learning rate as StyleGAN2's (with He-initialised layers lr 0.0025 moves its
# weights sqrt(fan_in / 2) = 8-32x as fast relative to their scale, and it diverged within 3 epochs), EMA half-life 10 kimg with
# ramp-up 0.05, the full ADA pipeline with target 0.6. ADA moves p by 1 in 100 kimg here (ADA's 500 would cap p at 0.38 in the
# 192 kimg of a 400-epoch CPU run).
STYLE_ADA = PRESETS["style"].replace(
    preset="style-ada", mapping_layers=2, lr_g=0.0025, lr_d=0.0025, beta_1=0.0, beta_2=0.99, r1_gamma=0.0002 * 128**2 / 32, r1_every=16,
    lazy_correction=True, ema_decay=0.0, ema_kimg=10.0, ema_rampup=0.05, augment="ada", ada_target=0.6, ada_kimg=100.0, d_equalized=True,
)
PRESETS["style-ada"] = STYLE_ADA
# GPU: StyleGAN2-ADA's widths for 128x128 halved (256 at 4..32, 128 at 64, 64 at 128; D mirrored), its 512-wide latent and w,
# batch 32 (its choice on one GPU); the float16 generator 7.1M parameters, 13.5 MiB (tests/test_r3gan.py).
PRESETS["style-ada-gpu"] = STYLE_ADA.replace(
    preset="style-ada-gpu", latent_dim=512, w_dim=512, g_widths=(256, 256, 256, 256, 128, 64), d_widths=(64, 128, 256, 256, 256, 256),
    epochs=5000, sample_every=100, checkpoint_every=100, metrics_every=100,
)
# Seconds, for the other families (tests and CI): the same tiny data and schedule as `smoke`.
PRESETS["smoke-style"] = PRESETS["smoke"].replace(
    preset="smoke-style", arch="style", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8, 8), w_dim=16, mapping_layers=2, d_dropout=0.0,
)
PRESETS["smoke-fastgan"] = PRESETS["smoke"].replace(
    preset="smoke-fastgan", arch="fastgan", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8), d_dropout=0.0,
)
PRESETS["smoke-r3gan"] = PRESETS["smoke"].replace(
    preset="smoke-r3gan", arch="r3gan", g_widths=(16, 16, 8, 8, 4, 4), d_widths=(4, 4, 8, 8, 8, 8), blocks_per_stage=1, group_width=4,
    d_dropout=0.0, loss="rpgan", r1_gamma=1.0, r2_gamma=1.0, beta_1=0.0, beta_2=0.99,
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
