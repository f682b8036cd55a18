"""Command line: `python -m covgan_utils [--verbose] <command> ...`; each command calls the library function
the notebooks use.

Every command's arguments are declared here, with light types and checks, so `--help` and a bad
argument answer before Keras or TensorFlow is imported. Only then is the module that runs the
command imported (`handler="module:function"`), with the TensorFlow/XLA/CUDA start-up noise kept off
the terminal unless `--verbose` is given. User errors (ValueError, FileNotFoundError, ...) print one
line and exit 2.
"""
import argparse
import pathlib
import sys

from covgan_utils import config as config_lib
from covgan_utils import console

AUTOENCODER_PRESETS = ("paper", "quick", "smoke")  # autoencoder.PRESETS (a test keeps them equal)
ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: ...; see --help`) and exit 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


# ---------------------------------------------------------------- argument types

def _whole(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


positive_int, seed_int, port_int = _whole(1), _whole(0), _whole(1)


def _preset(args):
    if args.preset is not None and args.preset not in config_lib.PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose from {', '.join(config_lib.PRESETS)}")


def _strip_suffix(args):
    if pathlib.Path(args.out).suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--out must end in .png or .gif, got {args.out}")


# ---------------------------------------------------------------- commands

def _command(sub, name, handler, help, check=None):
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler, check=check)
    return p


def _group(subparsers, name, help):
    sub = subparsers.add_parser(name, help=help, description=help).add_subparsers(dest=f"{name}_command", metavar="ACTION")
    sub.required = True
    return sub


def _data_commands(subparsers):
    sub = _group(subparsers, "data", "find, download or describe the COVID-CT scans")
    p = _command(sub, "locate", "data_cli:_locate", "print the data folder that would be used")
    p.add_argument("--data", help="explicit data folder")
    p = _command(sub, "download", "data_cli:_download", "fetch the upstream release zips into data/raw/")
    p.add_argument("--dest", help="target folder (default data/raw/)")
    p.add_argument("--base-url", help="where the zips live (default: the upstream release)")
    p.add_argument("--sha256", action="append", default=[], metavar="FILE=HEX", help="expected digest of one file")
    p = _command(sub, "describe", "data_cli:_describe", "load, preprocess, cache and summarise the scans")
    p.add_argument("--data", help="explicit data folder")
    p.add_argument("--classes", nargs="+", default=["CT_COVID", "CT_NonCOVID"], metavar="CLASS", help="CT_COVID and/or CT_NonCOVID")
    p = _command(sub, "export-cache", "data_cli:_export_cache", "write the preprocessed scans (both classes, no flips) to one .npz usable as --data")
    p.add_argument("out", help="output .npz file")
    p.add_argument("--data", help="explicit data folder")


def _training_commands(subparsers):
    p = _command(subparsers, "train", "train:_cli_train", "train a GAN preset into a run folder", check=_preset)
    p.add_argument("--preset", default=None, help=f"one of {', '.join(config_lib.PRESETS)} (default quick, smoke under COVGAN_SMOKE=1; with --resume: the run's)")
    p.add_argument("--data", help="data folder or data cache .npz (default: $COVGAN_DATA, data/raw/, ../shared/data/covid-ct)")
    p.add_argument("--run-dir", help="run folder (default: next models/<NNNNN>-<preset>/)")
    p.add_argument("--epochs", type=positive_int, help="total epochs (also extends a resumed run)")
    p.add_argument("--seed", type=seed_int, help="training seed")
    p.add_argument("--minutes", type=positive_float, help="wall-clock budget of this invocation: stop (with a checkpoint) after the first epoch past it")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (or the newest run of the preset)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="change config fields, e.g. --set g_widths=256,128,64,32,16 loss=hinge")
    p = _command(subparsers, "gpu-job", "gpu_job:_cli_gpu_job", "train on a data cache, export, score: at most 8 small files in --out (tools/gpu_run.sh)", check=_preset)
    p.add_argument("--data", required=True, help="data cache .npz from `data export-cache` (a data folder works too)")
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--preset", default="gpu", help="training preset (default gpu)")
    p.add_argument("--minutes", type=positive_float, default=8.0, help="training wall-clock budget (default 8); stops after the first epoch past it")
    p.add_argument("--epochs", type=positive_int, help="at most this many epochs (default: the preset's)")
    p.add_argument("--run-dir", help="run folder (default: next models/<NNNNN>-<preset>/)")
    p.add_argument("--n-eval", type=_whole(8), default=500, help="generated images scored in metrics.json (default 500)")
    p = _command(subparsers, "release", "release:_cli_release", "export a run's generator as the released model (models/release/)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    p.add_argument("--out", help="release folder (default models/release/)")


def truncation_psi(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"psi must be in [0, 2] (1 = no truncation), got {text}")
    return value


def _class_and_truncation(p):
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"),
                   help="class to generate (conditional models; an unconditional COVID model takes covid)")
    p.add_argument("--truncation", type=truncation_psi, default=1.0, help="style-based models: psi < 1 trades variety for typicality")


def _projection_commands(subparsers):
    p = _command(subparsers, "project", "inversion:_cli_project", "project real scans into the generator: DIR/<stem>.png reconstructions + DIR/latents.npz")
    p.add_argument("--image", nargs="+", required=True, metavar="FILE", help="PNG/JPEG scans")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    p.add_argument("--steps", type=_whole(5), default=300, help="optimisation steps (default 300)")
    p.add_argument("--starts", type=positive_int, default=4, help="seeded starts; each image keeps its best (default 4)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"), help="class input of a conditional model")
    p.add_argument("--method", choices=("optimise", "encoder", "encoder+optimise"), default="optimise",
                   help="optimisation from seeded starts (default), the trained inversion encoder (trained and cached beside the model on first use), or the encoder's guess then optimisation")
    p = _command(subparsers, "edit", "direction:_cli_edit", "walk a projected scan along the disease direction: a strip from the input to strength S", check=_strip_suffix)
    p.add_argument("--image", required=True, metavar="FILE", help="PNG/JPEG scan")
    p.add_argument("--direction", choices=("covid",), default="covid", help="the direction (fitted on projected train scans, cached beside the model)")
    p.add_argument("--strength", type=float, default=None,
                   help="last frame's strength: distance along the unit boundary normal (default 6; negative: away from COVID), or for a conditional model the class-embedding mix from non-COVID (0) to COVID (1, the default)")
    p.add_argument("--steps", type=_whole(2), default=7, help="frames from strength 0 to S")
    p.add_argument("--out", required=True, help="output .png strip (the input first) or .gif")
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--project-steps", type=_whole(5), default=300, help="optimisation steps of the projection")
    p.add_argument("--seed", type=seed_int, default=0)
    p = _command(subparsers, "progress", "project:_cli_progress", "real-to-real progression: project two scans and walk between them", check=_strip_suffix)
    p.add_argument("--from", required=True, metavar="FILE", help="first scan")
    p.add_argument("--to", required=True, metavar="FILE", help="last scan")
    p.add_argument("--steps", type=_whole(2), default=8, help="frames on the path, ends included")
    p.add_argument("--out", required=True, help="output .png (strip, real scans at the ends) or .gif")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    p.add_argument("--project-steps", type=_whole(5), default=300, help="optimisation steps of each projection")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"), help="class input of a conditional model")


def _sampling_commands(subparsers):
    p = _command(subparsers, "sample", "sample:_cli_sample", "write N generated images seed<S+i>.png")
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--n", type=positive_int, default=16)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=seed_int, default=0, help="first seed")
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    _class_and_truncation(p)
    p = _command(subparsers, "interpolate", "sample:_cli_interpolate", "strip or GIF between the noise of two seeds", check=_strip_suffix)
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--seed-a", type=seed_int, required=True)
    p.add_argument("--seed-b", type=seed_int, required=True)
    p.add_argument("--steps", type=_whole(2), default=8)
    p.add_argument("--out", required=True, help="output .png (strip) or .gif")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")
    _class_and_truncation(p)
    _projection_commands(subparsers)
    p = _command(subparsers, "plot", "plots:_cli_plot", "write the loss/accuracy/sample figures into a run folder")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--data", help="data folder for the real grid")


def _metric_commands(subparsers):
    p = _command(subparsers, "evaluate", "metrics:_evaluate", "score generated slices against real ones (JSON report)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--generated", help="folder of generated images")
    source.add_argument("--run", help="run folder: sample n images (seeds S..S+n-1) from one of its checkpoints")
    p.add_argument("--real", required=True, help="folder of real held-out images")
    p.add_argument("--train", help="folder of the generator's training images (memorisation test, floor)")
    p.add_argument("--out", required=True, help="report JSON file")
    p.add_argument("--n", type=positive_int, default=500, help="images per side (default 500)")
    p.add_argument("--features", default="auto", choices=("domain", "inception", "auto"), help="auto (default): inception when the [fid] extra is installed, with domain (layout-only) numbers beside")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--checkpoint", default="latest", help="with --run: latest | best | epoch number | file")
    p.add_argument("--no-baselines", action="store_true", help="skip the floor and bad-generator baselines")
    p.add_argument("--downstream", action="store_true", help="also run the (slow) downstream classifier test")
    sub = _group(subparsers, "metrics", "metric utilities")
    p = _command(sub, "train-encoder", "metrics:_train_encoder", "retrain the domain encoder used for KID/FID/PRDC features")
    p.add_argument("--data", help="explicit data folder")
    p.add_argument("--out", help="output folder (default models/domain_encoder/)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p = _command(sub, "export-real", "metrics:_export_real", "write the COVID train/val split of the real scans as PNG folders")
    p.add_argument("out", help="folder to hold train/ and val/")
    p.add_argument("--data", help="explicit data folder")
    _command(sub, "list", "metrics:_list", "list the registered metrics")
    p = _command(subparsers, "calibrate", "calibration:_cli_calibrate", "score degraded real scans against the validation scans (a scale for KID/FID/PRDC)")
    p.add_argument("--features", default="domain", choices=("domain", "inception"))
    p.add_argument("--n", type=positive_int, default=112, help="images per side (default 112: the whole validation set)")
    p.add_argument("--data", help="data folder")
    p.add_argument("--out", required=True, help="report JSON file")


def _progression_commands(subparsers):
    sub = _group(subparsers, "progression", "progression measured against real scans")
    p = _command(sub, "report", "progression:_cli_report", "reconstruction and follow-up tables -> docs/PROGRESSION.md")
    p.add_argument("--run", help="run folder (default: the released model)")
    p.add_argument("--out", help="markdown file (default docs/PROGRESSION.md)")
    p.add_argument("--n-val", type=positive_int, default=16, help="validation scans to reconstruct (default 16)")
    p.add_argument("--steps", type=_whole(5), default=300, help="optimisation steps per projection")
    p.add_argument("--starts", type=positive_int, default=4, help="seeded starts per projection")
    p.add_argument("--autoencoder", help="an autoencoder run folder for the reconstruction baseline")
    p.add_argument("--encoder-epochs", type=_whole(0), default=20, help="epochs of the trained inversion encoder if none is cached beside the model (0: leave its rows out)")
    p.add_argument("--data", help="data folder")
    p.add_argument("--seed", type=seed_int, default=0)


def _ablation_commands(subparsers):
    sub = _group(subparsers, "ablation", "equal-compute ablation: train, evaluate, tabulate")
    root_help = "folder of the ablation runs (default models/ablation/)"
    p = _command(sub, "run", "ablation:_cli_run", "train every (row, seed) for the same wall-clock budget")
    p.add_argument("--study", choices=("remedies", "families"), default="remedies", help="which table: remedies on the paper recipe, or model families")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="rows of the ablation table (default: all of the study's)")
    p.add_argument("--seeds", nargs="+", type=seed_int, default=[0, 1, 2])
    p.add_argument("--minutes", type=positive_float, required=True, help="wall-clock budget per run")
    p.add_argument("--arch", choices=("paper", "lean"), default="paper", help="model for the paper-recipe rows (lean on CPU)")
    p.add_argument("--root", help=root_help)
    p.add_argument("--data", help="data folder")
    p = _command(sub, "evaluate", "ablation:_cli_evaluate", "score every finished run against the validation split")
    p.add_argument("--root", help=root_help)
    p.add_argument("--n", type=positive_int, default=500)
    p.add_argument("--features", choices=("domain", "inception"), default="domain", help="inception: the [fid] extra, writes eval-inception.json")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows' runs (default: every finished run)")
    p.add_argument("--seeds", nargs="+", type=seed_int, help="only these seeds' runs (default: every seed)")
    p = _command(sub, "curve", "ablation:_cli_curve", "score several checkpoints of one run (metrics over training)")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--epochs", nargs="+", type=seed_int, required=True, help="checkpoint epochs to score")
    p.add_argument("--n", type=positive_int, default=500)
    p.add_argument("--features", choices=("domain", "inception"), default="domain")
    p.add_argument("--data", help="data folder")
    p = _command(sub, "sheet", "ablation:_cli_sheet", "one figure of samples, a line per row")
    p.add_argument("--root", help=root_help)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=seed_int, default=0, help="which training seed's runs to show")
    p = _command(sub, "slim", "ablation:_cli_slim", "keep only each finished run's generator (float16), to bring runs back from another machine")
    p.add_argument("--root", help=root_help)
    p = _command(sub, "report", "ablation:_cli_report", "print the markdown table")
    p.add_argument("--root", help=root_help)
    p.add_argument("--floor", help="an evaluate report JSON whose baselines hold the real-vs-real floor")
    p.add_argument("--features", choices=("domain", "inception"), default="domain", help="which eval*.json files to tabulate")
    p.add_argument("--study", choices=("remedies", "families"), default="remedies", help="which table (families: Inception columns with copies and near-duplicates)")


def _widget_commands(subparsers):
    sub = _group(subparsers, "widget", "latent-space widget: train the autoencoder, export to TF.js, serve")
    p = _command(sub, "train", "widget:_cmd_train", "train the dense autoencoder (models/<NNNNN>-autoencoder/)")
    p.add_argument("--preset", default="paper", choices=AUTOENCODER_PRESETS, help="autoencoder preset")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--gan", default="latest", help='GAN run whose samples are encoded ("latest", a run, or "none")')
    p = _command(sub, "export", "widget:_cmd_export", "export the widget (TF.js decoder + latent map) to exports/latent_widget/")
    p.add_argument("--autoencoder", default="latest", help='autoencoder run folder, number or "latest"')
    p.add_argument("--gan", default="latest", help='GAN run for the generated overlay ("latest", "release", a run, or "none")')
    p.add_argument("--out", default=None, help="output folder (default exports/latent_widget/)")
    p.add_argument("--n-generated", type=positive_int, default=256)
    p.add_argument("--cdn-fallback", action="store_true", help="load tfjs/three from a CDN when widget/node_modules is missing")
    p.add_argument("--project", type=_whole(0), default=0, metavar="N", help="project N validation scans into the generator and map the reconstructions (default 0)")
    p.add_argument("--progression", action="append", nargs=2, metavar=("A", "B"),
                   help="map the walk between two projected scans (a scan file, or a real scan's index or file name); repeatable")
    p.add_argument("--generator", default="release", help='GAN for --project/--progression: "release" (default), a run folder or number')
    p.add_argument("--project-steps", type=_whole(5), default=300, help="optimisation steps per projection (default 300)")
    p.add_argument("--project-starts", type=positive_int, default=4, help="seeded starts per projection (default 4)")
    p.add_argument("--path-steps", type=_whole(2), default=8, help="frames on each progression, ends included (default 8)")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear", help="path between the two latents of a progression")
    p = _command(sub, "serve", "widget:_cmd_serve", "serve the exported widget on 127.0.0.1")
    p.add_argument("--port", type=port_int, default=8000)
    p.add_argument("--dir", default=None, help="widget folder (default exports/latent_widget/)")


COMMANDS = (_data_commands, _training_commands, _sampling_commands, _metric_commands, _ablation_commands, _progression_commands, _widget_commands)


def build_parser():
    parser = Parser(prog="python -m covgan_utils", description="COVID-19 lung CT GAN toolkit.")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow/XLA/CUDA start-up messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in COMMANDS:
        add(subparsers)
    return parser


# ---------------------------------------------------------------- running

def load_handler(spec, verbose=False):
    """`"module:function"` of covgan_utils -> the function, importing its module (quietly unless verbose)."""
    module, _, name = spec.partition(":")
    return getattr(console.quiet_import(f"covgan_utils.{module}", verbose), name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.check is not None:
            args.check(args)
        result = load_handler(args.handler, args.verbose)(args)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)
