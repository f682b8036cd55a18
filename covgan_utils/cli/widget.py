"""`widget train | export | serve`: the dense autoencoder, its TF.js export with the latent map, and the page's server."""
import threading

from covgan_utils.cli.args import AUTOENCODER_PRESETS, RUN_HELP, command, group, port_int, positive_int, whole

NONE = "none"  # --gan none: no generated overlay
AUTOENCODER_RUN_HELP = "a run folder, a run number, a name under models/, or `latest`"  # RUN_HELP without `release`


def add_commands(subparsers):
    sub = group(subparsers, "widget", "latent-space widget: train the autoencoder, export to TF.js, serve")
    p = command(sub, "train", cmd_train, "train the dense autoencoder (models/<NNNNN>-autoencoder/)")
    p.add_argument("--preset", default="paper", choices=AUTOENCODER_PRESETS, help="autoencoder preset")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--gan", default="latest", help=f"GAN run whose samples are encoded too: {RUN_HELP}, or `none`")
    p = command(sub, "export", cmd_export, "export the widget (TF.js decoder + latent map) to exports/latent_widget/")
    p.add_argument("--autoencoder", default="latest", help=f"autoencoder run: {AUTOENCODER_RUN_HELP}")
    p.add_argument("--gan", default="latest", help=f"GAN run for the generated overlay: {RUN_HELP}, or `none`")
    p.add_argument("--out", default=None, help="output folder (default exports/latent_widget/)")
    p.add_argument("--n-generated", type=positive_int, default=256)
    p.add_argument("--cdn-fallback", action="store_true", help="load tfjs/three from a CDN when widget/node_modules is missing")
    p.add_argument("--project", type=whole(0), default=0, metavar="N", help="project N validation scans into the generator and map the reconstructions (default 0)")
    p.add_argument("--progression", action="append", nargs=2, metavar=("A", "B"),
                   help="map the walk between two projected scans (a scan file, or a real scan's index or file name); repeatable")
    p.add_argument("--generator", default="release", help=f"GAN for --project/--progression: {RUN_HELP} (default release)")
    p.add_argument("--project-steps", type=whole(5), default=300, help="optimisation steps per projection (default 300)")
    p.add_argument("--project-starts", type=positive_int, default=4, help="seeded starts per projection (default 4)")
    p.add_argument("--path-steps", type=whole(2), default=8, help="frames on each progression, ends included (default 8)")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear", help="path between the two latents of a progression")
    p = command(sub, "serve", cmd_serve, "serve the exported widget on 127.0.0.1", backend=False)
    p.add_argument("--port", type=port_int, default=8000, help="port in [0, 65535] (default 8000; 0: any free port)")
    p.add_argument("--dir", default=None, help="widget folder (default exports/latent_widget/)")


def gan_arg(value):
    """--gan value -> run designator, or None for `none`."""
    return None if value in (None, NONE, "") else value


def cmd_train(args):
    from covgan_utils.widget import autoencoder

    config = autoencoder.get_config(args.preset, epochs=args.epochs, gan_run=gan_arg(args.gan))
    autoencoder.train_autoencoder(config)


def cmd_export(args):
    from covgan_utils.widget import export

    projection = export.ProjectionOptions(project=args.project, progression=args.progression, generator=args.generator, steps=args.project_steps,
                                          starts=args.project_starts, path_steps=args.path_steps, mode=args.mode)
    export.export_widget(args.autoencoder, gan=gan_arg(args.gan), out_dir=args.out, n_generated=args.n_generated, projection=projection,
                         cdn_fallback=args.cdn_fallback)


def cmd_serve(args):
    from covgan_utils.widget import server as server_lib

    server, url = server_lib.start_server(args.dir, args.port, check_files=True)
    print(f"serving the latent widget at {url} (Ctrl+C to stop)", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
