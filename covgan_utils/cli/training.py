"""`train` and `release`: train a preset into a run folder; export a run's generator as the released model."""
import pathlib

from covgan_utils import config as config_lib
from covgan_utils.cli.args import RUN_HELP, add_checkpoint, check_preset, command, output, device_count, positive_float, positive_int, seed_int


def add_commands(subparsers):
    p = command(subparsers, "train", cmd_train, "train a GAN preset into a run folder", check=check_preset)
    p.add_argument("--preset", default=None, help=f"one of {', '.join(config_lib.PRESETS)} (default quick, smoke under COVGAN_SMOKE=1; with --resume: the run's)")
    p.add_argument("--data", help="data folder or data cache .npz (default: $COVGAN_DATA, data/raw/, ../shared/data/covid-ct)")
    p.add_argument("--run-dir", help="run folder (default: next models/<NNNNN>-<preset>/)")
    p.add_argument("--epochs", type=positive_int, help="total epochs (also extends a resumed run)")
    p.add_argument("--seed", type=seed_int, help="training seed")
    p.add_argument("--minutes", type=positive_float, help="wall-clock budget of this invocation: stop (with a checkpoint) after the first epoch past it")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir (or the newest run of the preset)")
    p.add_argument("--devices", type=device_count, help="data-parallel over N JAX devices, or `all` (sets config devices; checkpoints do not depend on it)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="change config fields, e.g. --set g_widths=256,128,64,32,16 loss=hinge")
    p = command(subparsers, "release", cmd_release, "export a run's generator as the released model (models/release/)")
    p.add_argument("--run", required=True, help=f"GAN run: {RUN_HELP}")
    add_checkpoint(p)
    p.add_argument("--out", help="release folder (default models/release/)")


def cmd_train(args):
    from covgan_utils.training import distribute, loop

    devices = distribute.device_count() if args.devices == "all" else args.devices
    pairs = (("epochs", args.epochs), ("seed", args.seed), ("time_budget_minutes", args.minutes), ("devices", devices))
    overrides = {k: v for k, v in pairs if v is not None}
    if args.set and args.resume:
        raise ValueError("--set cannot change a run being resumed; its config.json is kept")
    if args.run_dir and not args.resume:
        output(args.run_dir, "dir", data=args.data, flag="--run-dir", create=False)
    if args.resume and args.run_dir and (pathlib.Path(args.run_dir) / "config.json").is_file():
        saved = config_lib.Config.load(args.run_dir)  # resume asks for the run's own config (its --set changes too)
        config = saved.replace(preset=args.preset or saved.preset, **{"time_budget_minutes": 0.0, **overrides})  # --minutes: this invocation's
    else:
        config = config_lib.get_preset(args.preset or config_lib.default_preset(), **overrides).with_overrides(args.set)
    print(loop.train(config, args.run_dir, data_dir=args.data, resume=args.resume))


def cmd_release(args):
    from covgan_utils import runs

    out = output(args.out, "dir", flag="--out") if args.out else None
    print(runs.export_release(args.run, out, args.checkpoint))
