"""`project`, `edit`, `progress` and `progression report`: real scans into the generator's latent space and along paths in it."""

from covgan_utils.cli.args import RUN_HELP, add_checkpoint, add_run, check_strip_suffix, command, finite_float, group, output, positive_int, seed_int, whole


def add_commands(subparsers):
    p = command(subparsers, "project", cmd_project, "project real scans into the generator: DIR/<stem>.png reconstructions + DIR/latents.npz")
    p.add_argument("--image", nargs="+", required=True, metavar="FILE", help="PNG/JPEG scans")
    p.add_argument("--out", required=True, help="output folder")
    add_run(p)
    add_checkpoint(p)
    p.add_argument("--steps", type=whole(5), default=300, help="optimisation steps (default 300)")
    p.add_argument("--starts", type=positive_int, default=4, help="seeded starts; each image keeps its best (default 4)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"), help="class input of a conditional model")
    p.add_argument("--method", choices=("optimise", "encoder", "encoder+optimise"), default="optimise",
                   help="optimisation from seeded starts (default), the trained inversion encoder (trained and cached beside the model on first use), or the encoder's guess then optimisation")
    p = command(subparsers, "edit", cmd_edit, "walk a projected scan along the disease direction: a strip from the input to strength S", check=check_strip_suffix)
    p.add_argument("--image", required=True, metavar="FILE", help="PNG/JPEG scan")
    p.add_argument("--direction", choices=("covid",), default="covid", help="the direction (fitted on projected train scans, cached beside the model)")
    p.add_argument("--strength", type=finite_float, default=None,
                   help="last frame's strength: distance along the unit boundary normal (default 6; negative: away from COVID), or for a conditional model the class-embedding mix from non-COVID (0) to COVID (1, the default)")
    p.add_argument("--steps", type=whole(2), default=7, help="frames from strength 0 to S")
    p.add_argument("--out", required=True, help="output .png strip (the input first) or .gif")
    add_run(p)
    p.add_argument("--project-steps", type=whole(5), default=300, help="optimisation steps of the projection")
    p.add_argument("--seed", type=seed_int, default=0)
    p = command(subparsers, "progress", cmd_progress, "real-to-real progression: project two scans and walk between them", check=check_strip_suffix)
    p.add_argument("--from", required=True, metavar="FILE", help="first scan")
    p.add_argument("--to", required=True, metavar="FILE", help="last scan")
    p.add_argument("--steps", type=whole(2), default=8, help="frames on the path, ends included")
    p.add_argument("--out", required=True, help="output .png (strip, real scans at the ends) or .gif")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    add_run(p)
    add_checkpoint(p)
    p.add_argument("--project-steps", type=whole(5), default=300, help="optimisation steps of each projection")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class", dest="cls", choices=("covid", "non-covid"), help="class input of a conditional model")
    sub = group(subparsers, "progression", "progression measured against real scans")
    p = command(sub, "report", cmd_progression_report, "reconstruction and follow-up tables -> docs/PROGRESSION.md")
    add_run(p)
    p.add_argument("--out", help="markdown file (default docs/PROGRESSION.md)")
    p.add_argument("--n-val", type=positive_int, default=16, help="validation scans to reconstruct (default 16)")
    p.add_argument("--steps", type=whole(5), default=300, help="optimisation steps per projection")
    p.add_argument("--starts", type=positive_int, default=4, help="seeded starts per projection")
    p.add_argument("--autoencoder", help=f"an autoencoder run for the reconstruction baseline: {RUN_HELP.replace(', or `release`', '')}")
    p.add_argument("--encoder-epochs", type=whole(0), default=20, help="epochs of the trained inversion encoder if none is cached beside the model (0: leave its rows out)")
    p.add_argument("--data", help="data folder")
    p.add_argument("--seed", type=seed_int, default=0)


def _label(args):
    from covgan_utils import runs, sampling

    return sampling.class_label(runs.model_config(args.run), args.cls) if args.cls else None


def cmd_project(args):
    from covgan_utils import runs
    from covgan_utils.inversion import inversion_encoder, projection

    images = projection.read_images(args.image)  # bad files answer before any training
    stems = projection.file_stems(args.image)
    out = output(args.out, "dir")
    for stem in stems:  # a reconstruction must never replace a scan
        output(out / f"{stem}.png", inputs=args.image)
    generator = runs.load_generator(args.run, args.checkpoint)
    label = _label(args)
    inverter = None if args.method == "optimise" else inversion_encoder.load_or_train(args.run, generator)[1]
    result = inversion_encoder.project_with(args.method, generator, images, inverter, label, num_steps=args.steps, starts=args.starts, seed=args.seed, progress=True)
    projection.write_projection(result, stems, out)
    print(f"wrote {len(args.image)} reconstructions and latents.npz ({result['space']}, {args.method}) to {args.out}")


def cmd_edit(args):
    import numpy as np

    from covgan_utils import sampling
    from covgan_utils.inversion import direction, projection

    image = projection.read_images([args.image])[0]  # a bad file answers before any fitting
    out = output(args.out, inputs=[args.image])
    result = direction.disease_walk(image, args.run, args.strength, args.steps, num_steps=args.project_steps, seed=args.seed, progress=True)
    probs = direction.covid_probability(result["frames"])
    sampling.save_strip(np.concatenate([image[None], result["frames"]]), out)
    print(f"{out}: P(COVID) along the walk " + " ".join(f"{p:.2f}" for p in probs)
          + (" (rises monotonically)" if direction.rises_monotonically(probs) else " (not monotonic)"))


def cmd_progress(args):
    from covgan_utils import runs
    from covgan_utils.inversion import projection

    a, b = projection.read_images([getattr(args, "from"), args.to])  # bad files and outputs answer before any work
    out = output(args.out, inputs=[getattr(args, "from"), args.to])
    generator = runs.load_generator(args.run, args.checkpoint)
    label = _label(args)
    result = projection.progression(generator, a, b, args.steps, args.mode, label, num_steps=args.project_steps, seed=args.seed, progress=True)
    print(projection.save_progression(result, out))


def cmd_progression_report(args):
    from covgan_utils.studies import progression

    if args.out:
        output(args.out, data=args.data)
    print(progression.write_report(args.run, args.out, args.n_val, args.steps, args.starts, args.autoencoder, args.data, args.seed, args.encoder_epochs))
