"""`evaluate`, `metrics ...` and `calibrate`: generated slices scored against real ones."""
import json
import pathlib

from covgan_utils.cli.args import RUN_HELP, command, group, output, positive_int, seed_int


def add_commands(subparsers):
    p = command(subparsers, "evaluate", cmd_evaluate, "score generated slices against real ones (JSON report)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--generated", help="folder of generated images")
    source.add_argument("--run", help=f"GAN run to sample n images from (seeds S..S+n-1): {RUN_HELP}")
    p.add_argument("--real", required=True, help="folder of real held-out images")
    p.add_argument("--train", help="folder of the generator's training images (memorisation test, floor)")
    p.add_argument("--out", required=True, help="report JSON file")
    p.add_argument("--n", type=positive_int, default=500, help="images per side (default 500)")
    p.add_argument("--features", default="auto", choices=("domain", "inception", "auto"), help="auto (default): inception when the [fid] extra is installed, with domain (layout-only) numbers beside")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--checkpoint", default="latest", help="with --run: latest | best | epoch number | file")
    p.add_argument("--no-baselines", action="store_true", help="skip the floor and bad-generator baselines")
    p.add_argument("--downstream", action="store_true", help="also run the (slow) downstream classifier test")
    sub = group(subparsers, "metrics", "metric utilities")
    p = command(sub, "train-encoder", cmd_train_domain_encoder, "retrain the domain encoder used for KID/FID/PRDC features")
    p.add_argument("--data", help="explicit data folder")
    p.add_argument("--out", help="output folder (default models/domain_encoder/)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p = command(sub, "export-real", cmd_export_real, "write the COVID train/val split of the real scans as PNG folders", backend=False)
    p.add_argument("out", help="folder to hold train/ and val/")
    p.add_argument("--data", help="explicit data folder")
    command(sub, "list", cmd_list, "list the registered metrics", backend=False)
    p = command(subparsers, "calibrate", cmd_calibrate, "score degraded real scans against the validation scans (a scale for KID/FID/PRDC)")
    p.add_argument("--features", default="domain", choices=("domain", "inception"))
    p.add_argument("--n", type=positive_int, default=112, help="images per side (default 112: the whole validation set)")
    p.add_argument("--data", help="data folder")
    p.add_argument("--out", required=True, help="report JSON file")


def cmd_evaluate(args):
    from covgan_utils import runs, sampling
    from covgan_utils.data import dataset
    from covgan_utils.metrics import downstream, features, report

    for name in ("real", "train", "generated"):
        folder = getattr(args, name)
        if folder is not None and not pathlib.Path(folder).is_dir():
            raise FileNotFoundError(f"--{name} folder {folder} does not exist")
    if args.run is not None:
        runs.resolve_run(args.run)  # a wrong run answers before any image is read
        seeds = sampling.seed_range(args.seed, args.n)
    sources = [f for f in (args.real, args.train, args.generated) if f]
    out = output(args.out, protected=sources)
    if args.train is not None:
        output(out.with_suffix(".nearest.png"), protected=sources)
    real = dataset.load_folder(args.real)
    train = dataset.load_folder(args.train) if args.train else None
    generated = dataset.load_folder(args.generated) if args.generated else None
    generator = runs.load_generator(args.run, args.checkpoint) if generated is None else None  # a damaged run answers here
    feature_name, _ = features.feature_extractor(args.features)  # a missing [fid] extra answers here; nothing extracted yet
    report.check_set_sizes(None if generated is None else len(generated), len(real), None if train is None else len(train), args.n,
                           not args.no_baselines, feature_name == "inception")  # too few images: refused before any sample
    if generated is None:
        generated = sampling.generate(generator, seeds)
    result = report.evaluate_images(generated, real, train, n=args.n, features=feature_name, seed=args.seed,
                                    baselines=not args.no_baselines, nearest_png=out.with_suffix(".nearest.png") if train is not None else None)
    result["source"] = {"generated": args.generated, "run": args.run, "real": args.real, "train": args.train}
    if args.downstream:
        result["downstream"] = downstream.downstream_utility(generated)
    report.write_report(result, out)
    print(report.summary_table(result))
    print(f"report written to {out} ({result['wall_seconds']} s)")


def cmd_export_real(args):
    from covgan_utils.metrics import report

    out = output(args.out, "dir", data=args.data, create=False)  # created by export_real once both sides hold scans
    train, val = report.real_split(args.data)
    if not len(train) or not len(val):
        raise ValueError(f"the patient split of the data holds {len(train)} train and {len(val)} validation COVID scans; "
                         "export-real needs both: use a data folder with more patients (its metadata tables name them)")
    counts = report.export_real(out, args.data)
    print(f"wrote {counts['train']} train and {counts['val']} val COVID images under {args.out}")


def cmd_train_domain_encoder(args):
    from covgan_utils.metrics import domain_encoder

    kwargs = {} if args.epochs is None else {"epochs": args.epochs}
    out = domain_encoder.train_encoder(args.data, out_dir=args.out, **kwargs)
    print(f"domain encoder written to {out}")


def cmd_list(args):
    from covgan_utils.metrics import quality

    print("\n".join(f"{k}: {(v.__doc__ or '').strip().splitlines()[0]}" for k, v in quality.METRICS.items()))


def cmd_calibrate(args):
    from covgan_utils.metrics import calibration, report
    from covgan_utils.util import files

    if args.n < 10:
        raise ValueError(f"--n must be at least 10 (k-nearest-neighbour metrics need neighbours), got {args.n}")
    out = output(args.out, data=args.data)
    train, val = report.real_split(args.data)
    result = calibration.ladder(train.images, val.images, args.features, args.n)
    files.write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(calibration.table(result))
    print(f"report written to {out} ({result['wall_seconds']} s)")
