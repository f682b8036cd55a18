"""`sample`, `interpolate` and `plot`: images addressed by seed, paths between seeds, a run's figures."""

from covgan_utils.cli.args import add_checkpoint, add_class_and_truncation, add_run, check_strip_suffix, command, output, positive_int, seed_int, whole


def add_commands(subparsers):
    p = command(subparsers, "sample", cmd_sample, "write N generated images seed<S+i>.png")
    add_run(p)
    p.add_argument("--n", type=positive_int, default=16)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=seed_int, default=0, help="first seed; seeds S..S+N-1 lie in [0, 2**32 - 1]")
    p.add_argument("--overwrite", action="store_true", help="write into a folder that holds another model's samples")
    add_checkpoint(p)
    add_class_and_truncation(p)
    p = command(subparsers, "interpolate", cmd_interpolate, "strip or GIF between the noise of two seeds", check=check_strip_suffix)
    add_run(p)
    p.add_argument("--seed-a", type=seed_int, required=True)
    p.add_argument("--seed-b", type=seed_int, required=True)
    p.add_argument("--steps", type=whole(2), default=8)
    p.add_argument("--out", required=True, help="output .png (strip) or .gif")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    add_checkpoint(p)
    add_class_and_truncation(p)
    p = command(subparsers, "plot", cmd_plot, "write the loss/accuracy/sample figures into a run folder")
    p.add_argument("--run", required=True, help="GAN run: a run folder, a run number, a name under models/ or `latest`")
    p.add_argument("--data", help="data folder for the real grid")


def _generator_and_label(args):
    from covgan_utils import runs, sampling

    label = sampling.class_label(runs.model_config(args.run), args.cls) if args.cls else None
    return runs.load_generator(args.run, args.checkpoint), label


def cmd_sample(args):
    from covgan_utils import sampling

    sampling.seed_range(args.seed, args.n)  # seeds past the range answer before the model is loaded
    out = output(args.out, "dir", create=False)  # created by sample_to_folder once the model has loaded
    generator, label = _generator_and_label(args)
    model = {"model": f"run {args.run} ({args.checkpoint})" if args.run else "release"}
    files = sampling.sample_to_folder(generator, args.n, out, args.seed, label, args.truncation, model=model, overwrite=args.overwrite)
    print(f"wrote {len(files)} images to {args.out}")


def cmd_interpolate(args):
    from covgan_utils import sampling

    out = output(args.out)
    generator, label = _generator_and_label(args)
    frames = sampling.interpolate(generator, args.seed_a, args.seed_b, args.steps, args.mode, label, args.truncation)
    sampling.save_strip(frames, out)
    print(args.out)


def cmd_plot(args):
    from covgan_utils import plots, runs

    run_dir = runs.resolve_run(args.run)
    for path in plots.plot_run(run_dir):
        print(path)
    table = plots.metric_table(run_dir)
    if table:
        print(f"\nmetrics written during training ({run_dir / 'metrics.md'}):\n{table}")
