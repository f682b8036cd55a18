"""`ablation ...` and `gpu-job`: equal-compute studies, and the self-contained job a GPU machine runs."""
import json

from covgan_utils.cli.args import RUN_HELP, check_preset, command, device_count, group, output, positive_float, positive_int, seed_int, whole

ROOT_HELP = "folder of the ablation runs (default models/ablation/)"


def add_commands(subparsers):
    sub = group(subparsers, "ablation", "equal-compute ablation: train, evaluate, tabulate")
    p = command(sub, "run", cmd_ablation_run, "train every (row, seed) for the same wall-clock budget")
    p.add_argument("--study", choices=("remedies", "families"), default="remedies", help="which table: remedies on the paper recipe, or model families")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="rows of the ablation table (default: all of the study's)")
    p.add_argument("--seeds", nargs="+", type=seed_int, default=[0, 1, 2])
    p.add_argument("--minutes", type=positive_float, required=True, help="wall-clock budget per run")
    p.add_argument("--arch", choices=("paper", "lean"), default="paper", help="model for the paper-recipe rows (lean on CPU)")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--data", help="data folder")
    p = command(sub, "evaluate", cmd_ablation_evaluate, "score every finished run against the validation split")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--n", type=positive_int, default=500)
    p.add_argument("--features", choices=("domain", "inception"), default="domain", help="inception: the [fid] extra, writes eval-inception.json")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows' runs (default: every finished run)")
    p.add_argument("--seeds", nargs="+", type=seed_int, help="only these seeds' runs (default: every seed)")
    p = command(sub, "curve", cmd_ablation_curve, "score several checkpoints of one run (metrics over training)")
    p.add_argument("--run", required=True, help=f"GAN run: {RUN_HELP.replace(', or `release`', '')}")
    p.add_argument("--epochs", nargs="+", type=seed_int, required=True, help="checkpoint epochs to score")
    p.add_argument("--n", type=positive_int, default=500)
    p.add_argument("--features", choices=("domain", "inception"), default="domain")
    p.add_argument("--data", help="data folder")
    p = command(sub, "sheet", cmd_ablation_sheet, "one figure of samples, a line per row")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=seed_int, default=0, help="which training seed's runs to show")
    p = command(sub, "slim", cmd_ablation_slim, "keep only each finished run's generator (float16), to bring runs back from another machine")
    p.add_argument("--root", help=ROOT_HELP)
    p = command(sub, "report", cmd_ablation_report, "print the markdown table")
    p.add_argument("--root", help=ROOT_HELP)
    p.add_argument("--floor", help="an evaluate report JSON whose baselines hold the real-vs-real floor")
    p.add_argument("--features", choices=("domain", "inception"), default="domain", help="which eval*.json files to tabulate")
    p.add_argument("--study", choices=("remedies", "families"), default="remedies", help="which table (families: Inception columns with copies and near-duplicates)")
    p = command(subparsers, "gpu-job", cmd_gpu_job, "train on a data cache, export, score: at most 8 small files in --out (tools/gpu_run.sh)", check=check_preset)
    p.add_argument("--data", required=True, help="data cache .npz from `data export-cache` (a data folder works too)")
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--preset", default="gpu", help="training preset (default gpu)")
    p.add_argument("--minutes", type=positive_float, default=8.0, help="training wall-clock budget (default 8); stops after the first epoch past it")
    p.add_argument("--epochs", type=positive_int, help="at most this many epochs (default: the preset's)")
    p.add_argument("--run-dir", help="run folder (default: next models/<NNNNN>-<preset>/)")
    p.add_argument("--n-eval", type=whole(8), default=500, help="generated images scored in metrics.json (default 500)")
    p.add_argument("--devices", type=device_count, default=1, help="data-parallel over N JAX devices, or `all` (default 1)")


def _root(args, must_exist=True):
    import pathlib

    from covgan_utils.util import paths

    root = pathlib.Path(args.root or paths.MODELS_DIR / "ablation")
    if must_exist and not root.is_dir():
        raise FileNotFoundError(f"--root {root} does not exist; pass the folder of the ablation runs (written by `ablation run`)")
    return root


def _finished(args, *selection):
    from covgan_utils.studies import ablation

    return ablation.finished_runs(_root(args), *selection)  # none: a one-line ValueError


def cmd_ablation_run(args):
    from covgan_utils.studies import ablation

    print("\n".join(map(str, ablation.run(args.rows or list(ablation.STUDIES[args.study]), args.seeds, args.minutes, args.root, args.arch, args.data))))


def cmd_ablation_evaluate(args):
    from covgan_utils.studies import ablation

    ablation.evaluate(_finished(args, args.rows, args.seeds), n=args.n, features=args.features)


def cmd_ablation_curve(args):
    from covgan_utils import runs
    from covgan_utils.studies import ablation

    run_dir = runs.resolve_run(args.run)
    ablation.curve(run_dir, args.epochs, args.n, args.features, args.data)
    print(ablation.curve_table(run_dir, args.features))


def cmd_ablation_sheet(args):
    from covgan_utils.studies import ablation

    out = output(args.out)
    _finished(args)
    print("\n".join(ablation.sheet(_root(args), out, seed_of_run=args.seed)))


def cmd_ablation_slim(args):
    from covgan_utils.studies import ablation

    for run_dir in _finished(args):
        print(ablation.slim(run_dir))


def cmd_ablation_report(args):
    from covgan_utils.studies import ablation

    floor = ablation.read_floor(args.floor) if args.floor else None
    _finished(args)
    print(ablation.table(_root(args), floor, args.features, args.study))
    if args.study == "families":
        print("\nAugmentation leak (std of angle in degrees, elongation, area fraction; mean asymmetry):\n")
        print(ablation.leak_table(_root(args), args.features))


def cmd_gpu_job(args):
    from covgan_utils.studies import gpu_job
    from covgan_utils.training import distribute

    output(args.out, "dir", data=args.data)
    devices = distribute.device_count() if args.devices == "all" else args.devices
    out = gpu_job.run_job(args.data, args.out, preset=args.preset, minutes=args.minutes, run_dir=args.run_dir, epochs=args.epochs, n_eval=args.n_eval, devices=devices)
    job = json.loads((out / "job.json").read_text())
    kid = json.loads((out / "metrics.json").read_text())["generated"]["kid"]["mean"]
    print(f"{job['epochs_done']} epochs, {job['steps']} steps in {job['wall_minutes']:.1f} min on {', '.join(job.get('devices', []))} ({job['keras_backend']}); domain KID {kid:.4f}")
    for file in sorted(out.iterdir()):
        print(f"{file.stat().st_size:>10}  {file}")
