"""`data` sub-commands: locate, download, describe, export-cache."""
from covgan_utils import data


def add_commands(subparsers):
    p = subparsers.add_parser("data", help="find, download or describe the COVID-CT scans")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    locate = sub.add_parser("locate", help="print the data folder that would be used")
    locate.add_argument("--data", help="explicit data folder")
    locate.set_defaults(func=_locate)
    down = sub.add_parser("download", help="fetch the upstream release zips into data/raw/")
    down.add_argument("--dest", help="target folder (default data/raw/)")
    down.add_argument("--base-url", default=data.UPSTREAM_BASE, help="where the zips live")
    down.add_argument("--sha256", action="append", default=[], metavar="FILE=HEX", help="expected digest of one file")
    down.set_defaults(func=_download)
    desc = sub.add_parser("describe", help="load, preprocess, cache and summarise the scans")
    desc.add_argument("--data", help="explicit data folder")
    desc.add_argument("--classes", nargs="+", default=list(data.CLASSES), choices=data.CLASSES)
    desc.set_defaults(func=_describe)
    export = sub.add_parser("export-cache", help="write the preprocessed scans (both classes, no flips) to one .npz usable as --data")
    export.add_argument("out", help="output .npz file")
    export.add_argument("--data", help="explicit data folder")
    export.set_defaults(func=_export_cache)


def _locate(args):
    print(data.find_data_dir(args.data))


def _download(args):
    expected = {}
    for item in args.sha256:
        name, sep, digest = item.partition("=")
        if not sep or len(digest) != 64:
            raise ValueError(f"--sha256 takes FILE=HEX (64 hex digits), got {item!r}")
        expected[name] = digest.lower()
    for path in data.download(args.dest, base_url=args.base_url, sha256=expected):
        print(f"{data.sha256_of(path)}  {path}")


def _describe(args):
    ds = data.load_dataset(args.data, classes=tuple(args.classes))
    print(data.describe(ds))


def _export_cache(args):
    out = data.export_cache(args.out, args.data)
    ds = data.load_dataset(out, classes=data.CLASSES, flip=False)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB, {data.describe(ds)}")
