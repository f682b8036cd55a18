"""`data` commands: locate, download, describe, export-cache."""
from covgan_utils.cli.args import command, group, output


def add_commands(subparsers):
    sub = group(subparsers, "data", "find, download or describe the COVID-CT scans")
    p = command(sub, "locate", cmd_locate, "print the data folder that would be used", backend=False)
    p.add_argument("--data", help="explicit data folder")
    p = command(sub, "download", cmd_download, "fetch the upstream release zips into data/raw/", backend=False)
    p.add_argument("--dest", help="target folder (default data/raw/)")
    p.add_argument("--base-url", help="where the zips live (default: the upstream release)")
    p.add_argument("--sha256", action="append", default=[], metavar="FILE=HEX", help="expected digest of one file")
    p = command(sub, "describe", cmd_describe, "load, preprocess, cache and summarise the scans", backend=False)
    p.add_argument("--data", help="explicit data folder")
    p.add_argument("--classes", nargs="+", default=["CT_COVID", "CT_NonCOVID"], metavar="CLASS", help="CT_COVID and/or CT_NonCOVID")
    p = command(sub, "export-cache", cmd_export_cache, "write the preprocessed scans (both classes, no flips) to one .npz usable as --data", backend=False)
    p.add_argument("out", help="output .npz file")
    p.add_argument("--data", help="explicit data folder")


def cmd_locate(args):
    from covgan_utils.data import sources

    print(sources.find_data_dir(args.data))


def cmd_download(args):
    from covgan_utils.data import sources

    expected = {}
    for item in args.sha256:
        name, sep, digest = item.partition("=")
        if not sep or len(digest) != 64:
            raise ValueError(f"--sha256 takes FILE=HEX (64 hex digits), got {item!r}")
        expected[name] = digest.lower()
    for path in sources.download(args.dest, base_url=args.base_url or sources.UPSTREAM_BASE, sha256=expected):
        print(f"{sources.sha256_of(path)}  {path}")


def cmd_describe(args):
    from covgan_utils.data import dataset

    print(dataset.describe(dataset.load_dataset(args.data, classes=tuple(args.classes))))


def cmd_export_cache(args):
    from covgan_utils.data import dataset, sources

    out = dataset.export_cache(output(args.out, "file", data=args.data), args.data)
    ds = dataset.load_dataset(out, classes=sources.CLASSES, flip=False)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB, {dataset.describe(ds)}")
