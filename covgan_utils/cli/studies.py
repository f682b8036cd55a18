"""`ablation ...`, `gpu-job` and `paper-job`: equal-compute studies, and the self-contained jobs a GPU machine runs."""
import json

from covgan_utils.cli.args import RUN_HELP, check_preset, command, device_count, group, output, positive_float, positive_int, seed_int, whole

ROOT_HELP = "folder of the ablation runs (default models/ablation/)"


def add_commands(subparsers):
    add_select_commands(subparsers)
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
    p = command(subparsers, "paper-job", cmd_paper_job, "train the paper's own model in several variants, one after the other: "
                "one tar per run and job.json in --out (tools/gpu_run.sh paper)", check=check_preset)
    p.add_argument("--data", required=True, help="data cache .npz from `data export-cache` (a data folder works too)")
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--runs", nargs="+", metavar="RUN", default=["1:1", "1:1 paper-code"],
                   help='"G:1" (generator steps per discriminator step), optionally with a scaling: 2:1 "1:1 paper-code" (default: 1:1 "1:1 paper-code")')
    p.add_argument("--minutes", type=positive_float, default=8.0, help="training wall-clock budget shared equally by the runs (default 8)")
    p.add_argument("--preset", default="paper", help="training preset (default paper)")
    p.add_argument("--epochs", type=positive_int, help="at most this many epochs per run (default: the preset's)")
    p.add_argument("--n-samples", type=whole(8), default=500, help="samples of each run's last epoch that come back, at most 700 (default 500)")
    p.add_argument("--grid-every", type=positive_int, default=10, help="a fixed-seed sample grid every N epochs (default 10)")
    p.add_argument("--work-dir", help="folder of the run folders and their checkpoints (default: a new folder under /tmp)")
    p = command(subparsers, "paper-job-score", cmd_paper_job_score, "unpack a returned paper-job folder, score each run's samples against the validation split")
    p.add_argument("--job", required=True, help="the folder `paper-job` wrote (job.json and one tar per run)")
    p.add_argument("--data", help="data folder or cache (default: the data search order)")
    p.add_argument("--dest", help="folder for the unpacked runs (default: JOB-runs beside the job folder)")
    p.add_argument("--out", help="table JSON (default: DEST/scores.json)")
    p.add_argument("--n", type=whole(8), default=500, help="images per set (default 500)")
    p.add_argument("--features", choices=("auto", "domain", "inception"), default="auto", help="auto: inception when the [fid] extra is installed")


def add_select_commands(subparsers):
    """`select run | continue | score | screen`: the two-stage model selection of `studies.selection`."""
    sub = group(subparsers, "select", "two-stage model selection in one GPU call (tools/gpu_run.sh select), scored here")
    p = command(sub, "run", cmd_select_run, "stage 1: every candidate at once; the fixed rule on domain features; stage 2: the leader alone")
    p.add_argument("--data", required=True, help="data cache .npz from `data export-cache` (a data folder works too)")
    p.add_argument("--out", required=True, help="new or empty output folder: at most 8 files under 16 MB")
    p.add_argument("--minutes", type=positive_float, required=True, help="wall-clock minutes of the whole call (stages, scoring, outputs)")
    p.add_argument("--stage1-minutes", type=positive_float, help="training minutes of each candidate in stage 1 (default 45%% of --minutes)")
    p.add_argument("--candidates", nargs="+", metavar="NAME", help="candidates (default: the GPU-size ones the CPU screen kept, selection.DEFAULT_CANDIDATES; r3gan-gpu "
                   "by name; smoke smoke-style smoke-fastgan rehearse on a CPU)")
    p.add_argument("--n-samples", type=whole(8), default=500, help="samples per candidate, scored and brought back as uint8 (default 500)")
    p.add_argument("--reserve-minutes", type=positive_float, default=1.0, help="minutes kept for scoring and the outputs after stage 2 (default 1)")
    p.add_argument("--stage2-minutes", type=positive_float, help="at most this many minutes for stage 2 (default: all that is left)")
    p.add_argument("--root", help="folder of the run folders, kept on the machine for `select continue` (default models/ablation-selection/)")
    p = command(sub, "continue", cmd_select_continue, "a second call on the same machine: more minutes for the leader")
    p.add_argument("--out", required=True, help="new or empty output folder")
    p.add_argument("--minutes", type=positive_float, required=True, help="wall-clock minutes of the call")
    p.add_argument("--root", help="the --root of `select run` (default models/ablation-selection/)")
    p.add_argument("--data", help="data cache (default: the one `select run` used)")
    p.add_argument("--reserve-minutes", type=positive_float, default=0.5, help="minutes kept for scoring and the outputs (default 0.5)")
    p = command(sub, "score", cmd_select_score, "score a returned folder here: stage-1 table and the leader's curve")
    p.add_argument("dir", help="the folder a `select run` or `select continue` call returned")
    p.add_argument("--to", help="folder for the tables and reports (default: DIR-scored beside DIR)")
    p.add_argument("--n", type=whole(8), help="at most this many samples per set (default: all returned)")
    p.add_argument("--features", choices=("auto", "domain", "inception"), default="auto", help="auto: inception when the [fid] extra is installed")
    p.add_argument("--data", help="data folder or cache (default: the data search order)")
    p = command(sub, "screen", cmd_select_screen, "screen CPU-size candidates one after another at equal wall time on this machine")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="rows of the selection-cpu study (default: all)")
    p.add_argument("--minutes", type=positive_float, default=30.0, help="wall-clock budget per row and seed (default 30)")
    p.add_argument("--seeds", nargs="+", type=seed_int, default=[0])
    p.add_argument("--root", help="folder of the runs (default models/ablation-selection-cpu/)")
    p.add_argument("--data", help="data folder")
    p.add_argument("--n", type=positive_int, default=500, help="samples scored per run (default 500)")


def cmd_select_run(args):
    from covgan_utils.studies import selection

    selection.check_plan(args.candidates, args.minutes, args.stage1_minutes, args.n_samples)  # refused before any folder is made
    output(args.out, "dir", data=args.data, create=False)
    out = selection.run_selection(args.data, args.out, args.minutes, args.stage1_minutes, args.candidates, args.n_samples, args.root,
                                  reserve_minutes=args.reserve_minutes, stage2_minutes=args.stage2_minutes)
    _print_selection(out)


def cmd_select_continue(args):
    from covgan_utils.studies import selection

    output(args.out, "dir", data=args.data, create=False)
    _print_selection(selection.continue_leader(args.out, args.minutes, args.root, args.data, args.reserve_minutes))


def _print_selection(out):
    state = json.loads((out / "selection.json").read_text())
    for name, c in state["candidates"].items():
        kid = f"domain KID {c['kid']:.4f}" if "kid" in c else "not trained"
        print(f"{name}: {c['epochs']} epochs, {kid}, {c['guard_trips']} guard trips{'; excluded: ' + c['excluded'] if c.get('excluded') else ''}")
    print(f"leader: {state['leader']}; " + "; ".join(f"{s['name']} {s['wall_minutes']} min" for s in state["stages"]))
    for file in sorted(out.iterdir()):
        print(f"{file.stat().st_size:>10}  {file}")


def cmd_select_score(args):
    from covgan_utils.studies import selection

    written = selection.score_returned(args.dir, args.to, args.features, args.n, args.data)
    print(written["stage1"].read_text())
    print(written["curve"].read_text())
    print(f"tables and reports in {written['dest']}")


def cmd_select_screen(args):
    from covgan_utils.studies import selection

    table, chosen = selection.cpu_screen(args.root, args.rows, args.minutes, args.seeds, args.data, args.n)
    print(table)
    print(f"\nleader: {chosen['leader']}" + (f"; excluded: {chosen['excluded']}" if chosen["excluded"] else ""))


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


def cmd_paper_job(args):
    from covgan_utils.studies import paper_job

    paper_job.parse_runs(args.runs)  # a bad run name, budget or sample count is refused before the output folder is made
    paper_job.check_job(args.minutes, args.n_samples)
    output(args.out, "dir", data=args.data)
    overrides = {} if args.epochs is None else {"epochs": args.epochs}
    out = paper_job.run_paper_job(args.data, args.out, runs=args.runs, minutes=args.minutes, preset=args.preset, n_samples=args.n_samples,
                                  grid_every=args.grid_every, overrides=overrides, work_dir=args.work_dir)
    job = paper_job.read_job(out)
    for run in job["runs"]:
        print(f"{run['run']}: {run['epochs_done']} epochs, {run['seconds_per_step_mean']} s per step in {run['wall_minutes']:.1f} min -> {run['file']}")
    print(f"on {', '.join(job.get('devices', []))} ({job['keras_backend']})")
    for file in sorted(out.iterdir()):
        print(f"{file.stat().st_size:>10}  {file}")


def cmd_paper_job_score(args):
    from covgan_utils.studies import paper_job

    table_file = paper_job.score_job(args.job, args.data, args.dest, n=args.n, features=args.features, out_file=args.out)
    table = json.loads(table_file.read_text())
    print(f"{table['features']} features, n = {table['n']}")
    shown = ("KID", "FID", "MS-SSIM (within set)", "blank fraction")
    print(f"{'run':>20}  " + "  ".join(f"{label:>20}" for label in shown))
    for name, row in {**table["runs"], "floor (real train)": table["floor"]}.items():
        print(f"{name:>20}  " + "  ".join(f"{'n/a' if row[label] is None else format(row[label], '.4g'):>20}" for label in shown))
    print(table_file)
