"""`bench`: time the training step per preset, backend and precision into one JSON report and
docs/PERFORMANCE.md (`covgan_utils.bench`); `--render` writes the document from an existing report."""
import argparse
import pathlib
import shlex
import sys

from covgan_utils.cli.args import command, positive_int

PROG = "python -m covgan_utils bench"


def add_commands(subparsers):
    p = command(subparsers, "bench", cmd_bench, "time the training step (project, textbook, PyTorch, in training) into docs/performance.json",
                check=check_bench, backend=False)
    p.add_argument("--presets", nargs="+", metavar="PRESET", help="presets to time (default: the device's plan; CPU: quick best)")
    p.add_argument("--backends", nargs="+", metavar="BACKEND", help="Keras backends, one worker process each (default: the plan's; CPU: tensorflow jax)")
    p.add_argument("--precisions", nargs="+", metavar="PRECISION", help="float32, mixed_bfloat16, mixed_float16 (default: float32 mixed_bfloat16)")
    p.add_argument("--steps", type=positive_int, help="timed calls per measurement (default: the plan's, per backend)")
    p.add_argument("--sweep-batches", nargs="+", type=positive_int, metavar="B", help="batch sizes of the batch sweep (default 16 32 64 128 256)")
    p.add_argument("--quick-check", action="store_true", help="every measurement with 1 step and a 2-epoch training: tests the pipeline, times nothing")
    p.add_argument("--out", default="docs/performance.json", help="JSON report to write (default docs/performance.json)")
    p.add_argument("--markdown", help="also write this markdown document from the report (docs/PERFORMANCE.md)")
    p.add_argument("--readme", help="also rewrite the step-time block of this README from the report")
    p.add_argument("--render", metavar="REPORT", help="write --markdown (and --readme) from this JSON report, measuring nothing")
    p.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)  # one worker process, started by the parent


def _file_in_existing_folder(flag, path, suffix):
    path = pathlib.Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"{flag} {path}: expected a {suffix} file; give a name ending in {suffix}")
    if not path.parent.resolve().is_dir():
        raise ValueError(f"{flag} {path}: the folder {path.parent} does not exist; create it or choose another path")
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")


def check_bench(args):
    """Every argument, before any work: one line naming the value and the fix."""
    from covgan_utils.bench import document, plan, runner

    if args.worker:
        return
    plan.check_names(args.presets, args.backends, args.precisions)
    runner.check_backends(args.backends)
    if args.render:
        if not pathlib.Path(args.render).is_file():
            raise FileNotFoundError(f"--render {args.render} does not exist; give a JSON report written by `{PROG}`")
        if not (args.markdown or args.readme):
            raise ValueError("--render needs --markdown FILE.md (or --readme README.md): where to write the document")
    else:
        _file_in_existing_folder("--out", args.out, ".json")
    if args.markdown:
        _file_in_existing_folder("--markdown", args.markdown, ".md")
    if args.readme:
        if not pathlib.Path(args.readme).is_file():
            raise FileNotFoundError(f"--readme {args.readme} does not exist; give the README whose step-time block to rewrite")
        document.replace_readme_block(pathlib.Path(args.readme).read_text(), None)  # exactly one block, or a one-line error


def command_line(args):
    """The command as typed (`python -m covgan_utils bench ...`), or rebuilt from the parsed flags."""
    if pathlib.Path(sys.argv[0]).name == "__main__.py" and "bench" in sys.argv[1:]:
        return "python -m covgan_utils " + shlex.join(sys.argv[1:])
    parts = [PROG]
    for flag in ("presets", "backends", "precisions", "steps", "sweep_batches", "out", "markdown", "readme"):
        value = getattr(args, flag)
        if value:
            parts += [f"--{flag.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
    return " ".join(parts + (["--quick-check"] if args.quick_check else []))


def cmd_bench(args):
    if args.worker:
        from covgan_utils.util import console

        console.start_backend_quietly(args.verbose)
        from covgan_utils.bench import worker

        return worker.run_file(args.worker)
    from covgan_utils import bench
    from covgan_utils.bench import runner
    from covgan_utils.util import files

    if args.render:
        report = files.read_json(args.render, f"give a JSON report written by `{PROG}`")
        if not isinstance(report.get("rows"), list):
            raise ValueError(f"--render {args.render}: not a bench report (no \"rows\" list); give a JSON report written by `{PROG}`")
        runner.write(report, None, args.markdown, args.readme)
        return None
    bench.benchmark(args.presets, args.backends, args.precisions, args.steps, args.sweep_batches, args.quick_check,
                    out=args.out, markdown=args.markdown, readme=args.readme, command=command_line(args))
    return None
