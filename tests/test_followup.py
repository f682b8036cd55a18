"""Scan times of the COVID-CT metadata (covgan_utils.data.followup): parsing, the table, the follow-up patients."""
import csv

import pytest

from covgan_utils.data import followup, sources
from covgan_utils.data.followup import TimePoint, parse_time

# Every distinct `Time` text of COVID-CT-MetaInfo.csv -> (day, anchor), or None when it gives no scan time.
EXPECTED = {
    "": None,
    " On the day of admission": (0.0, "admission"),
    " On the tenth day of admission": (10.0, "admission"),
    "0": (0.0, "unspecified"),
    "1": (1.0, "unspecified"),
    "10": (10.0, "unspecified"),
    "10 days": (10.0, "unspecified"),
    "10 days before DIP treatment": (-10.0, "treatment"),
    "11th day of the course of disease": (11.0, "onset"),
    "13 days": (13.0, "unspecified"),
    "15th day of the course of disease": (15.0, "onset"),
    "19 days": (19.0, "unspecified"),
    "2": (2.0, "unspecified"),
    "2 days after DIP treatment": (2.0, "treatment"),
    "2 days before DIP treatment": (-2.0, "treatment"),
    "22 days": (22.0, "unspecified"),
    "23 days": (23.0, "unspecified"),
    "29 days": (29.0, "unspecified"),
    "2nd day of the course of disease": (2.0, "onset"),
    "3": (3.0, "unspecified"),
    "3 days": (3.0, "unspecified"),
    "4": (4.0, "unspecified"),
    "5": (5.0, "unspecified"),
    "5 days before DIP treatment": (-5.0, "treatment"),
    "6": (6.0, "unspecified"),
    "7": (7.0, "unspecified"),
    "7 days": (7.0, "unspecified"),
    "7 days after DIP treatment": (7.0, "treatment"),
    "7th day of the course of disease": (7.0, "onset"),
    "8": (8.0, "unspecified"),
    "Illness Day 11, Hospital Day 3 ": (11.0, "onset"),
    "Illness Day 15, Hospital Day 7": (15.0, "onset"),
    "Illness Day 20, Hospital Day 12": (20.0, "onset"),
    "Illness Day 8, Hospital Day 0 ": (8.0, "onset"),
    "day 1": (1.0, "unspecified"),
    "day 1 after symptom onset": (1.0, "onset"),
    "day 1 from symptom onse ": (1.0, "onset"),
    "day 10": (10.0, "unspecified"),
    "day 11-12 after treatment": (11.5, "treatment"),
    "day 13": (13.0, "unspecified"),
    "day 13 after symptom onset": (13.0, "onset"),
    "day 14": (14.0, "unspecified"),
    "day 17 after symptom onset": (17.0, "onset"),
    "day 18": (18.0, "unspecified"),
    "day 2": (2.0, "unspecified"),
    "day 21": (21.0, "unspecified"),
    "day 4-5 after admission": (4.5, "admission"),
    "day 5": (5.0, "unspecified"),
    "day 5  from symptom onse ": (5.0, "onset"),
    "day 5 from symptom onse ": (5.0, "onset"),
    "day 6": (6.0, "unspecified"),
    "day 6 after the onset of illness": (6.0, "onset"),
    "day 7": (7.0, "unspecified"),
    "day 7 ": (7.0, "unspecified"),
    "day 7  from symptom onse ": (7.0, "onset"),
    "day 7 from symptom onse ": (7.0, "onset"),
    "day 9": (9.0, "unspecified"),
    "day 9 after symptom onset": (9.0, "onset"),
    "first day": (1.0, "unspecified"),
    "have fever and cough": None,
    "have fever for more than 3 days": None,
}
EXPECTED_UNPARSED = [("have fever and cough", 1), ("have fever for more than 3 days", 1)]

# Patients with >= 3 distinct days on one anchor. Patient 23's five texts are three days (two spellings
# each of day 5 and day 7); patient 62's days have no stated reference but come from one figure.
EXPECTED_FOLLOWUPS = [
    ("CT_COVID/Patient 2", "onset", [8.0, 11.0, 15.0, 20.0]),
    ("CT_COVID/Patient 13", "onset", [2.0, 7.0, 11.0, 15.0]),
    ("CT_COVID/Patient 23", "onset", [1.0, 5.0, 7.0]),
    ("CT_COVID/Patient 62", "unspecified", [2.0, 10.0, 18.0]),
    ("CT_COVID/Patient 63", "treatment", [-10.0, -5.0, -2.0, 2.0, 7.0]),
]


@pytest.fixture(scope="module")
def data_dir(real_data):
    """The real data's folder with its metadata tables (a data cache, or the bare release zips, have none)."""
    if real_data.is_file() or not (real_data / sources.METADATA["CT_COVID"][0]).is_file():
        pytest.skip(f"{real_data} holds no {sources.METADATA['CT_COVID'][0]}: these tests read the metadata of an unpacked copy")
    return real_data


def _times_in_csv(folder):
    with open(folder / sources.METADATA["CT_COVID"][0], encoding="latin-1", newline="") as fh:
        return {row["Time"] or "" for row in csv.DictReader(fh)}


def _as_expected(point):
    return None if point is None else (point.day, point.anchor)


@pytest.mark.parametrize("text", sorted(EXPECTED))
def test_parse_time_table(text):
    assert _as_expected(parse_time(text)) == EXPECTED[text], text


def test_table_covers_every_time_in_the_metadata(data_dir):
    present = _times_in_csv(data_dir)
    missing = sorted(present - set(EXPECTED))
    assert missing == [], f"Time texts in the metadata with no expected value in EXPECTED: {missing}"
    assert sorted(set(EXPECTED) - present) == [], "EXPECTED lists texts the metadata no longer has"


def test_unparsed_lists_the_texts_without_a_day(data_dir):
    found = followup.unparsed(data_dir)
    print("unparsed Time texts:", found)
    assert found == EXPECTED_UNPARSED


def test_time_table_rows_and_patient_ids(data_dir):
    table = followup.time_table(data_dir)
    assert len(table) == 349
    assert {tuple(sorted(r)) for r in table} == {("anchor", "day", "file", "patient", "present", "time")}
    patient_of = sources.read_patient_ids(data_dir, "CT_COVID")
    for row in table:
        assert row["patient"] == f"CT_COVID/{patient_of[row['file']]}"
        assert _as_expected(parse_time(row["time"])) == (None if row["anchor"] is None else (row["day"], row["anchor"]))
    assert sum(r["present"] for r in table) == len(list((data_dir / "CT_COVID").iterdir()))
    assert next(r for r in table if r["file"] == "2020.02.23.20026856-p17-115_0.png")["patient"] == "CT_COVID/Patient 23"


def test_followups_on_the_real_data(data_dir):
    found = followup.followups(data_dir)
    assert [(f["patient"], f["anchor"], [p["day"] for p in f["points"]]) for f in found] == EXPECTED_FOLLOWUPS
    for entry in found:
        for point in entry["points"]:
            assert point["files"], entry["patient"]
            for name in point["files"]:
                assert (data_dir / "CT_COVID" / name).is_file(), name
    patient_23 = next(f for f in found if f["patient"].endswith("Patient 23"))
    assert [len(p["files"]) for p in patient_23["points"]] == [2, 2, 2]  # the two spellings of day 5 (and 7) merge


def test_followups_with_two_points_and_bad_min_points(data_dir):
    pairs = {f["patient"]: f["anchor"] for f in followup.followups(data_dir, min_points=2)}
    assert len(pairs) == 21
    assert pairs["CT_COVID/Patient 144"] == "admission"
    with pytest.raises(ValueError, match="min_points"):
        followup.followups(data_dir, min_points=0)


@pytest.mark.parametrize("text, expected", [
    ("day 4-5", (4.5, "unspecified")),
    ("day 4 - 5 after admission", (4.5, "admission")),
    ("day 3 to 4 after symptom onset", (3.5, "onset")),
    ("Day 5-4", None),  # a range that runs backwards is not read
    ("3rd day of illness", (3.0, "onset")),
    ("the 21st day after admission", (21.0, "admission")),
    ("Second day of the course of the disease", (2.0, "onset")),
    ("twenty-second day of admission", (22.0, "admission")),
    ("FIRST DAY", (1.0, "unspecified")),
    ("day 5 from symptom onse", (5.0, "onset")),
    ("  DAY   7\tfrom  SYMPTOM onse  ", (7.0, "onset")),
    ("illness day 8,hospital day 0", (8.0, "onset")),
    ("Hospital Day 3", (3.0, "admission")),
    ("3 days before admission", (-3.0, "admission")),
    ("1 day before remdesivir treatment", (-1.0, "treatment")),
    ("0 days before DIP treatment", (0.0, "treatment")),
    ("day 2 of antiviral therapy", (2.0, "treatment")),
    ("on admission", (0.0, "admission")),
    ("have fever for more than 3 days", None),
    ("about a week after the trip", None),
    ("day 3 after surgery", None),  # an event that is none of the anchors
    ("3 weeks", None),
    ("   ", None),
])
def test_parse_time_edge_cases(text, expected):
    assert _as_expected(parse_time(text)) == expected


def test_parse_time_keeps_text_and_is_frozen():
    point = parse_time(" day 5  from symptom onse ")
    assert point == TimePoint(5.0, "onset", " day 5  from symptom onse ")
    with pytest.raises(AttributeError):
        point.day = 6.0
    assert parse_time(None) is None
    assert str(parse_time("0 days before DIP treatment").day) == "0.0"
    with pytest.raises(TypeError, match="str"):
        parse_time(3)


def test_days_since_onset():
    assert followup.days_since_onset("Illness Day 15, Hospital Day 7") == 15.0
    assert followup.days_since_onset("2nd day of the course of disease") == 2.0
    assert followup.days_since_onset("day 4-5 after admission") is None
    assert followup.days_since_onset("day 10") is None
    assert followup.days_since_onset("have fever and cough") is None


def test_fraction():
    assert followup.fraction(8, 11, 20) == pytest.approx(0.25)
    assert followup.fraction(-10, -2, 7) == pytest.approx(8 / 17)
    assert followup.fraction(1, 1, 7) == 0.0 and followup.fraction(1, 7, 7) == 1.0
    assert followup.fraction(20, 11, 8) == pytest.approx(0.75)  # a path may be given backwards
    with pytest.raises(ValueError, match="first and last day are both 5"):
        followup.fraction(5, 5, 5)
    with pytest.raises(ValueError, match="not between"):
        followup.fraction(1, 9, 7)


def test_module_doc_names_anchors_and_registration_caveat():
    doc = followup.__doc__
    for anchor in followup.ANCHORS:
        assert f'"{anchor}"' in doc
    assert "registered" in doc and "chest levels" in doc
