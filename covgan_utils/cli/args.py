"""Argument types and shared options of the command line (no Keras here: `--help` and bad arguments answer at once)."""
import argparse
import math
import pathlib

from covgan_utils import config as config_lib
from covgan_utils.util import fields

AUTOENCODER_PRESETS = ("paper", "quick", "smoke")  # widget.autoencoder.PRESETS (a test keeps them equal)
RUN_HELP = "a run folder, a run number, a name under models/, `latest`, or `release`"


SEED_MAX = fields.SEED_MAX


def _whole(minimum, maximum=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be in [{minimum}, {maximum}], got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}" if maximum is None else f"whole number in [{minimum}, {maximum}]"
    return parse


positive_int, seed_int, port_int = _whole(1), _whole(0, SEED_MAX), _whole(0, 65535)
whole = _whole


def positive_float(text):
    """A finite number > 0 (minutes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text}")
    return value


def device_count(text):
    """`all` (every device the backend sees, counted when the command runs) or a whole number >= 1."""
    if text == "all":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"expected `all` or a whole number >= 1 ({err})") from None


device_count.__name__ = "`all` or a whole number >= 1"


def truncation_psi(text):
    """psi in [0, 2] (1 = no truncation)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 2.0:
        raise argparse.ArgumentTypeError(f"psi must be in [0, 2] (1 = no truncation), got {text}")
    return value


def check_preset(args):
    if args.preset is not None and args.preset not in config_lib.PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose from {', '.join(config_lib.PRESETS)}")


def check_strip_suffix(args):
    if pathlib.Path(args.out).suffix.lower() not in (".png", ".gif"):
        raise ValueError(f"--out must end in .png or .gif, got {args.out}")


def command(sub, name, handler, help, check=None, backend=True):
    """A subcommand running `handler(args)`; `backend=False` for commands that never start Keras."""
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(handler=handler, check=check, backend=backend)
    return p


def group(subparsers, name, help):
    sub = subparsers.add_parser(name, help=help, description=help).add_subparsers(dest=f"{name}_command", metavar="ACTION")
    sub.required = True
    return sub


def add_run(p, flag="--run", default=None, help=None):
    p.add_argument(flag, default=default, help=help or f"GAN run: {RUN_HELP} (default: {default or 'release'})")


def add_checkpoint(p):
    p.add_argument("--checkpoint", default="latest", help="latest | best | epoch number")


def add_class_and_truncation(p):
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"),
                   help="class to generate (conditional models; an unconditional COVID model takes covid)")
    p.add_argument("--truncation", type=truncation_psi, default=1.0, help="style-based models: psi < 1 trades variety for typicality")


def finite_float(text):
    """A finite number (NaN and infinity refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def data_folders(data=None):
    """Folders no output may go into: the project's data/ and the folder the scans are read from
    (`--data`, or wherever the data search order finds them)."""
    from covgan_utils.data import sources
    from covgan_utils.util import paths

    found = [paths.DATA_DIR]
    try:
        found.append(sources.find_data_dir(data))
    except (ValueError, OSError):
        if data:
            found.append(data)
    return found


def output(path, kind="file", inputs=(), data=None, flag="--out", protected=(), create=True):
    """Check an output path before any work (`util.outputs.check_output`), protecting the data folders."""
    from covgan_utils.util import outputs

    return outputs.check_output(path, kind, inputs=inputs, protected=[*data_folders(data), *protected], flag=flag, create=create)
