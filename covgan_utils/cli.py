"""Command line: `python -m covgan_utils <command> ...`; each command calls the library function the notebooks use.

Every module in COMMAND_MODULES defines `add_commands(subparsers)`, registering sub-commands whose
parsers carry `func=callable(args)`. User errors (ValueError, FileNotFoundError) print one line and exit 2.
"""
import argparse
import importlib
import os
import sys

COMMAND_MODULES = (
    "covgan_utils.data_cli",
    "covgan_utils.train",
    "covgan_utils.sample",
    "covgan_utils.plots",
    "covgan_utils.release",
    "covgan_utils.ablation",
    "covgan_utils.widget",
    "covgan_utils.metrics",
    "covgan_utils.calibration",
    "covgan_utils.gpu_job",
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m covgan_utils", description="COVID-19 lung CT GAN toolkit.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if result is None else int(result)
