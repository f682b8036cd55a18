"""`data` commands (declared in `covgan_utils.cli`): locate, download, describe, export-cache."""
from covgan_utils import data


def _locate(args):
    print(data.find_data_dir(args.data))


def _download(args):
    expected = {}
    for item in args.sha256:
        name, sep, digest = item.partition("=")
        if not sep or len(digest) != 64:
            raise ValueError(f"--sha256 takes FILE=HEX (64 hex digits), got {item!r}")
        expected[name] = digest.lower()
    for path in data.download(args.dest, base_url=args.base_url or data.UPSTREAM_BASE, sha256=expected):
        print(f"{data.sha256_of(path)}  {path}")


def _describe(args):
    ds = data.load_dataset(args.data, classes=tuple(args.classes))
    print(data.describe(ds))


def _export_cache(args):
    out = data.export_cache(args.out, args.data)
    ds = data.load_dataset(out, classes=data.CLASSES, flip=False)
    print(f"{out}: {out.stat().st_size / 2**20:.1f} MB, {data.describe(ds)}")
