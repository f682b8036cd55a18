"""Outputs owned by the command: every output path is checked before any work starts.

`check_output(path, kind, inputs=..., protected=...)` refuses, with a one-line ValueError naming the
path and the fix: a name too long for the file system, a parent that is a file, an existing file where
a folder is meant or the reverse, a folder that cannot be written, an output that is one of the
inputs, and an output inside a protected folder (the data folder the scans were read from). It creates
nothing but the parent folders of a file and the folder itself for `kind="dir"`.
"""
import errno
import os
import pathlib

NAME_MAX = 255  # bytes in one path component (ext4, APFS, NTFS)
PATH_MAX = 4096


def _resolved(path):
    return pathlib.Path(os.path.abspath(os.path.expanduser(str(path))))


def _nearest_existing(path):
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return pathlib.Path("/")


def _check_name(path, flag):
    if len(os.fsencode(str(path))) > PATH_MAX:
        raise ValueError(f"{flag} {str(path)[:60]}...: the path is longer than {PATH_MAX} bytes; choose a shorter one")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ValueError(f"{flag} {str(path)[:60]}...: the name {part[:24]}... is longer than {NAME_MAX} bytes; choose a shorter one")


def _real(path):
    """The path with every symbolic link resolved (a link into the data folder is the data folder)."""
    return pathlib.Path(os.path.realpath(_resolved(path)))


def _check_not_input(path, inputs, protected, flag):
    real = _real(path)
    for item in inputs:
        if item is not None and _real(item) == real:
            raise ValueError(f"{flag} {path} is also an input; write the result to another file")
    for folder in protected:
        if folder is None:
            continue
        folder = _real(folder)
        if folder.is_file():  # a data cache: the file itself is the input
            if real == folder:
                raise ValueError(f"{flag} {path} is the data cache the scans are read from; write the result to another file")
            continue
        if real == folder or folder in real.parents:
            raise ValueError(f"{flag} {path} is inside the data folder {folder}, whose images are read as scans; write outside it")


def check_output(path, kind="file", inputs=(), protected=(), flag="--out", create=True):
    """Check (and prepare) an output path before work starts; returns it as an absolute Path.

    kind: "file" (its parent folders are created) or "dir" (created when missing). `inputs`: files the
    command reads, which the output must not be; `protected`: folders no output may go into;
    `create=False` checks without creating anything."""
    if kind not in ("file", "dir"):
        raise ValueError(f"unknown output kind {kind!r}; choose 'file' or 'dir'")
    path = _resolved(path)
    _check_name(path, flag)
    _check_not_input(path, inputs, protected, flag)
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ValueError(f"{flag} {path}: {blocker} is a file, not a folder; choose another path")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; give a folder")
    existing = _nearest_existing(path if kind == "dir" else path.parent)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {existing} is not writable; choose a folder you can write to")
    if create:
        (path if kind == "dir" else path.parent).mkdir(parents=True, exist_ok=True)
    return path


OS_HINTS = {  # errno -> what to do
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EACCES: "choose a path you can write to",
    errno.EPERM: "choose a path you can write to",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.EEXIST: "choose another name or remove it",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EADDRINUSE: "choose another --port",
    errno.ENOENT: "check the path",
}


def describe_os_error(err):
    """An OSError as one line: what failed, on which file, and what to do."""
    where = f" {err.filename}" if getattr(err, "filename", None) else ""
    also = f" -> {err.filename2}" if getattr(err, "filename2", None) else ""
    reason = err.strerror or str(err) or type(err).__name__
    hint = OS_HINTS.get(err.errno)
    return f"{reason}:{where}{also}" + (f"; {hint}" if hint else "")
