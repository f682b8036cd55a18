"""Command line: `python -m covgan_utils [--verbose] <command> ...`; each command calls the library function
the notebooks use.

One module per command group (`cli/data.py`, `training`, `sampling`, `inversion`, `metrics`, `studies`,
`widget`) declares its arguments and holds its handlers. Arguments are parsed before Keras is imported,
so `--help` and a bad argument answer at once; a handler imports the library it calls inside its body
(the one place the package imports inside functions), after Keras and its backend have been started
with their start-up noise kept off the terminal unless `--verbose` is given. User errors
(ValueError, FileNotFoundError, ...) print one line and exit 2.
"""
import argparse
import sys

from covgan_utils.cli import data, inversion, metrics, sampling, studies, training, widget
from covgan_utils.util import console

ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, IsADirectoryError)
GROUPS = (data, training, sampling, inversion, metrics, studies, widget)


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


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.check is not None:
            args.check(args)
        if args.backend:
            console.start_backend_quietly(args.verbose)
        result = args.handler(args)
    except ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)
