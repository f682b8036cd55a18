"""Command line: `python -m covgan_utils [--verbose] <command> ...`; each command calls the library function
the notebooks use.

One module per command group (`cli/data.py`, `training`, `sampling`, `inversion`, `metrics`, `studies`,
`widget`, `bench`) declares its arguments and holds its handlers. Arguments are parsed before Keras is imported,
so `--help` and a bad argument answer at once; a handler imports the library it calls inside its body
(the one place the package imports inside functions), after Keras and its backend have been started
with their start-up noise kept off the terminal unless `--verbose` is given. User errors
(ValueError, FileNotFoundError, ...) print one line and exit 2.
"""
import argparse
import contextlib
import os
import sys
import warnings

from covgan_utils.cli import bench, data, inversion, metrics, sampling, studies, training, widget
from covgan_utils.util import console, outputs

ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError)
BACKENDS = ("tensorflow", "jax")
GROUPS = (data, training, sampling, inversion, metrics, studies, widget, bench)


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: ...; see --help`) and exit 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser():
    parser = Parser(prog="python -m covgan_utils", description="COVID-19 lung CT GAN toolkit.")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow/XLA/CUDA start-up messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    subparsers.required = True
    for module in GROUPS:
        module.add_commands(subparsers)
    return parser


def check_backend(name=None):
    """Refuse a Keras backend the project does not run on, before Keras starts it."""
    name = name or os.environ.get("KERAS_BACKEND") or "tensorflow"
    if name not in BACKENDS:
        raise ValueError(f"KERAS_BACKEND={name} is not supported: covgan runs on {' or '.join(BACKENDS)}; set KERAS_BACKEND=tensorflow (CPU) or jax (GPU)")


def start_backend(verbose=False):
    check_backend()
    keras = console.start_backend_quietly(verbose)
    check_backend(keras.backend.backend())  # ~/.keras/keras.json may name another one


@contextlib.contextmanager
def one_line_warnings():
    """Warnings of the project print as `warning: ...` on one line while a command runs."""
    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: f"warning: {category.__name__}: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = saved


def main(argv=None):
    args = build_parser().parse_args(argv)
    with one_line_warnings():
        return _run(args)


def _run(args):
    try:
        if args.check is not None:
            args.check(args)
        if args.backend:
            start_backend(args.verbose)
        result = args.handler(args)
    except ERRORS as err:
        message = outputs.describe_os_error(err) if isinstance(err, OSError) and err.errno is not None else str(err)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:  # no space, name too long, address in use, ...: one line, not a traceback
        print(f"error: {outputs.describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)
