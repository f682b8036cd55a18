"""Scan times of the COVID-CT metadata as days, and the patients with follow-up scans.

The `Time` column of COVID-CT-MetaInfo.csv is free text copied from the source papers. `parse_time`
turns it into a `TimePoint`: a number of days and the `anchor` that the days count from:

- "onset": illness or symptom onset ("day 6 after the onset of illness", "2nd day of the course of
  disease", "day 5 from symptom onse" [sic]; for "Illness Day 8, Hospital Day 0" the illness day).
- "admission": hospital admission ("day 4-5 after admission", "Hospital Day 3", "on the tenth day of
  admission"; "on the day of admission" is day 0, as "Hospital Day 0" is in this file).
- "treatment": a named treatment ("2 days after DIP treatment"; days before it are negative).
- "unspecified": a day with no stated reference ("day 10", "first day" = day 1, "10 days", a bare "10").

A stated range ("day 4-5") is taken at its midpoint (4.5). Texts that give no scan time ("have fever and
cough", "have fever for more than 3 days") parse to None: they are listed by `unparsed`, never guessed.
Sources differ in whether the anchor day itself counts as day 0 or day 1, so days may be off by one
between papers; within one patient (one paper) the differences hold.

`followups` finds the patients with scans at several days on ONE anchor, for which `fraction` places a
middle scan on the path between the first and the last. Caveat: slices from different dates are not
registered to each other; the papers picked them per figure, so two slices of one patient may show
different chest levels, and a change between them is not a change of the same tissue.

Patient ids are those `dataset.load_dataset` assigns ("CT_COVID/Patient 2"); file names are as in this copy
('%' of the metadata read as '_').
"""
import csv
import dataclasses
import pathlib
import re
import zipfile

import numpy as np

from covgan_utils.data import decoding, sources

CLASS = "CT_COVID"
ANCHORS = ("onset", "admission", "treatment", "unspecified")

_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth").split()
_ORDINAL_WORDS = {w: i for i, w in enumerate(_ORDINALS, 1)} | {"twentieth": 20, "thirtieth": 30}
_ORDINAL_WORDS |= {f"twenty-{w}": 20 + i for i, w in enumerate(_ORDINALS[:9], 1)}

_NUM = r"(?P<n>\d+(?:\.\d+)?)(?:\s?(?:-|to)\s?(?P<n2>\d+(?:\.\d+)?))?"
_ORD = r"(?P<ord>\d+(?:st|nd|rd|th)|" + "|".join(sorted(_ORDINAL_WORDS, key=len, reverse=True)) + ")"
_REF = r"(?: (?P<prep>after|from|since|of|before) (?P<ref>.+))?"
_PATTERNS = (  # (pattern, fixed anchor or None = read from the reference phrase); matched against the whole text
    (rf"illness day {_NUM}(?:,? ?hospital day \d+)?", "onset"),
    (rf"hospital day {_NUM}", "admission"),
    (rf"(?:on )?(?:the )?day {_NUM}{_REF}", None),
    (rf"(?:on )?(?:the )?{_ORD} day{_REF}", None),
    (rf"{_NUM} days?{_REF}", None),
    (_NUM, "unspecified"),
    (r"(?:on |at )?(?:the )?day of (?P<ref>.+)", None),
    (r"(?:on|at) (?P<ref>admission)", None),
)
_REFERENCES = (  # the event a day counts from, as a phrase after "after/from/since/of/before"
    (r"(?:(?:symptoms?|illness|disease|fever) )?ons(?:et|e)(?: of (?:the )?(?:illness|symptoms?|disease))?", "onset"),
    (r"(?:the )?course of (?:the )?(?:illness|disease)|illness|disease|symptoms?", "onset"),
    (r"(?:hospital )?admission|hospitali[sz]ation", "admission"),
    (r"(?:[a-z0-9/+-]+ ){0,3}(?:treatment|therapy)", "treatment"),
)


@dataclasses.dataclass(frozen=True)
class TimePoint:
    """A scan time: `day` counted from `anchor` (one of ANCHORS); `text` is the text it was read from."""

    day: float
    anchor: str
    text: str


def _normalise(text):
    text = re.sub(r"[\u2010-\u2015]", "-", text.lower())
    return " ".join(text.split()).strip(" .;")


def _reference_anchor(phrase):
    """Anchor of a reference phrase ("the onset of illness" -> "onset"), None if it names no known event."""
    phrase = phrase.removeprefix("the ")
    return next((anchor for pattern, anchor in _REFERENCES if re.fullmatch(pattern, phrase)), None)


def _day_of(groups):
    """Day stated by the matched number, ordinal or range (midpoint); 0 for "the day of X"; None if unusable."""
    if groups.get("ord"):
        word = groups["ord"]
        return float(_ORDINAL_WORDS.get(word) or int(re.match(r"\d+", word).group()))
    if not groups.get("n"):
        return 0.0
    low = float(groups["n"])
    high = float(groups["n2"]) if groups.get("n2") else low
    return (low + high) / 2 if high >= low else None


def parse_time(text):
    """`Time` text -> TimePoint, or None when it gives no usable scan time (empty, vague or unknown wording).

    A range "day 4-5" gives its midpoint 4.5; "before" gives negative days; ordinals ("2nd", "tenth")
    count as their number ("first day" = day 1). Case, extra spaces and the dataset's "onse" are tolerated.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"parse_time expects a str (or None), got {type(text).__name__}: {text!r}")
    clean = _normalise(text)
    for pattern, anchor in _PATTERNS:
        match = re.fullmatch(pattern, clean)
        if match is None:
            continue
        groups = match.groupdict()
        if anchor is None:
            anchor = _reference_anchor(groups["ref"]) if groups.get("ref") else "unspecified"
        day = _day_of(groups)
        if anchor is None or day is None:
            return None
        if groups.get("prep") == "before":
            day = -day if day else 0.0  # no "-0.0"
        return TimePoint(day, anchor, text)
    return None


def days_since_onset(text):
    """Days since illness/symptom onset stated by `text`, or None when it counts from anything else."""
    point = parse_time(text)
    return point.day if point is not None and point.anchor == "onset" else None


# ---------------------------------------------------------------- the metadata

def _metadata_dir(data_dir):
    """Folder holding the COVID metadata CSV (found as `sources.find_data_dir` finds the data)."""
    folder = sources.find_data_dir(data_dir)
    if folder.is_file():
        raise decoding.DataError(f"{folder} is a data cache without the metadata; pass the data folder holding {sources.METADATA[CLASS][0]}")
    if not (folder / sources.METADATA[CLASS][0]).is_file():
        raise decoding.DataError(f"no {sources.METADATA[CLASS][0]} in {folder}; the scan times come from that file")
    return folder


def _image_names(folder):
    """Names of the COVID images in this copy, from CT_COVID/ or CT_COVID.zip (empty set if neither)."""
    images, archive = folder / CLASS, folder / f"{CLASS}.zip"
    if images.is_dir():
        return {p.name for p in images.iterdir() if not p.name.startswith(".") and not p.is_dir()}
    if archive.is_file():
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [pathlib.PurePosixPath(n).name for n in zf.namelist() if not n.endswith("/") and "__MACOSX" not in n]
        except (zipfile.BadZipFile, OSError) as err:
            raise decoding.DataError(f"{archive} is not a readable zip file ({err}); download it again with "
                                 "`python -m covgan_utils data download`") from None
        return {n for n in names if not n.startswith(".")}
    return set()


def time_table(data_dir=None):
    """One dict per row of the COVID metadata: file, patient, time (raw text), day, anchor (None if unparsed)
    and present (whether the image is in this copy). `file` and `patient` are as `dataset.load_dataset` gives them.
    """
    folder = _metadata_dir(data_dir)
    csv_name, file_col, _ = sources.METADATA[CLASS]
    patient_of = sources.read_patient_ids(folder, CLASS)
    on_disk = _image_names(folder)
    with open(folder / csv_name, encoding="latin-1", newline="") as fh:  # read as sources.read_patient_ids reads it
        rows = [r for r in csv.DictReader(fh) if (r.get(file_col) or "").strip()]
    table = []
    for row in rows:
        name = row[file_col].strip().replace("%", "_")
        # dataset._decode_class: metadata id, else the file-name fallback (private there, called as is)
        patient = f"{CLASS}/{patient_of.get(name) or sources._fallback_patient(name)}"
        point = parse_time(row.get("Time") or "")
        table.append(dict(file=name, patient=patient, time=row.get("Time") or "", day=point.day if point else None,
                          anchor=point.anchor if point else None, present=name in on_disk))
    return table


def unparsed(data_dir=None):
    """Sorted [(text, row count)] of the non-empty `Time` texts that give no usable day."""
    counts = {}
    for row in time_table(data_dir):
        if row["anchor"] is None and row["time"].strip():
            counts[row["time"]] = counts.get(row["time"], 0) + 1
    return sorted(counts.items())


def _natural_key(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def followups(data_dir=None, min_points=3):
    """Patients with at least `min_points` distinct days on one anchor, images in this copy only.

    Returns [{"patient", "anchor", "points": [{"day", "files"}, ...]}] with points by day and patients in
    natural order; a patient with enough days on two anchors appears once per anchor.
    """
    if min_points < 1:
        raise ValueError(f"min_points must be at least 1, got {min_points}")
    grouped = {}  # (patient, anchor) -> {day: [files]}
    for row in time_table(data_dir):
        if row["anchor"] is not None and row["present"]:
            grouped.setdefault((row["patient"], row["anchor"]), {}).setdefault(row["day"], []).append(row["file"])
    found = []
    for (patient, anchor), days in sorted(grouped.items(), key=lambda item: (_natural_key(item[0][0]), item[0][1])):
        if len(days) >= min_points:
            points = [dict(day=day, files=sorted(days[day])) for day in sorted(days)]
            found.append(dict(patient=patient, anchor=anchor, points=points))
    return found


def fraction(first_day, middle_day, last_day):
    """Position of `middle_day` on the path from `first_day` to `last_day`: 0 at the first, 1 at the last."""
    if first_day == last_day:
        raise ValueError(f"first and last day are both {first_day}: no path between them to place day {middle_day} on")
    position = (middle_day - first_day) / (last_day - first_day)
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"day {middle_day} is not between day {first_day} and day {last_day} (position {position:.3g})")
    return float(position)


def read_scans(files, data_dir=None):
    """COVID images by file name (from CT_COVID/ or CT_COVID.zip), preprocessed as the training data ->
    [N, 128, 128, 1] in [-1, 1]; a missing or unreadable one raises a one-line DataError naming it."""
    folder = _metadata_dir(data_dir)
    images, archive = folder / CLASS, folder / f"{CLASS}.zip"
    out = []
    for name in files:
        if images.is_dir():
            path = images / name
            raw = path.read_bytes() if path.is_file() else None
        else:
            with zipfile.ZipFile(archive) as zf:
                members = [m for m in zf.namelist() if pathlib.PurePosixPath(m).name == name and "__MACOSX" not in m]
                raw = zf.read(members[0]) if members else None
        if raw is None:
            raise decoding.DataError(f"{name} is not in {folder / CLASS}; this copy of the data lacks it")
        image, reason = decoding.check_image(raw)
        if image is None:
            raise decoding.DataError(f"{folder / CLASS / name}: cannot be read ({reason})")
        out.append(image)
    return np.stack(out)[..., None]  # [N, 128, 128, 1]
