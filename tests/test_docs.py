"""The documents agree with the code and with the reports they quote, and keep agreeing.

- Headline numbers (README, docs/RESULTS.md, the model card): every table row that quotes the release, the
  previous release, the floor, the baselines, the calibration ladder or the downstream test is read cell by
  cell and compared with the JSON report in docs/ it comes from, at the precision printed; a grep for each
  headline quantity finds one printed value.
- The README's step-time block is the one the benchmark renders from docs/performance.json.
- The aim is stated once (docs/RESULTS.md, "The aim"); the other documents link to it.
- Module paths, `covgan_utils` imports in code blocks, file paths, `python -m covgan_utils` commands and
  `make` targets named in the documents exist; the README's layout table is the layering of
  tests/test_layering.py; no document quotes a test count.
"""
import argparse
import ast
import dataclasses
import json
import pathlib
import re
import shlex

import pytest
from test_layering import LAYERS

from covgan_utils import cli, config
from covgan_utils.bench import document

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "covgan_utils"
HEADLINE = ("README.md", "docs/RESULTS.md", "models/release/MODEL_CARD.md")
DOCUMENTS = HEADLINE + ("docs/EVALUATION.md", "docs/PROGRESSION.md")  # docs/WIDGET.md has its own owner


def _text(name):
    return (ROOT / name).read_text()


def _report(name):
    return json.loads((ROOT / "docs" / name).read_text())


# ---------------------------------------------------------------- reading numbers and tables

NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?%?(?![\w.])")
SAMPLE_SIZE = re.compile(r"\(n = [^)]*\)|\bof \d+\b|\(the \d+ training scans\)")


def numbers(cell):
    """The numbers printed in a table cell, without sample sizes ("(n = 112)", "of 500") or multiples ("10x")."""
    return NUMBER.findall(SAMPLE_SIZE.sub("", cell))


def agrees(printed, value):
    """`printed` ("0.071", "1.8%", "0") is `value` rounded to the digits it shows."""
    pct = printed.endswith("%")
    digits = printed.rstrip("%")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    scale = 100 if pct else 1
    return abs(float(digits) / scale - value) <= 0.5 * 10**-decimals / scale + 1e-12


def assert_cell(cell, values, where):
    shown = numbers(cell)
    assert len(shown) == len(values) and all(agrees(s, v) for s, v in zip(shown, values)), (
        f"{where}: {cell!r} does not print {[round(v, 6) for v in values]}")


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def tables(text):
    """[(header cells, [row cells])] of every pipe table in a markdown text."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+\s*", lines[i + 1]):
            header, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((header, rows))
        else:
            i += 1
    return found


def table_with(name, *header_words, without=()):
    """The one table of document `name` whose header holds every word in `header_words` (and none in `without`)."""
    def has(header, word):
        return any(word in h for h in header)

    hits = [t for t in tables(_text(name)) if all(has(t[0], w) for w in header_words) and not any(has(t[0], w) for w in without)]
    assert len(hits) == 1, f"{name}: {len(hits)} tables with header words {header_words}"
    return hits[0]


def row(table, label, name):
    """{header: cell} of the one row whose first cell starts with `label` (markdown ** stripped)."""
    header, rows = table
    hits = [r for r in rows if r[0].replace("**", "").startswith(label)]
    assert len(hits) == 1, f"{name}: {len(hits)} rows starting with {label!r}"
    return dict(zip(header, hits[0]))


def column(table, heading, name):
    """{first cell: cell} of the column whose header starts with `heading`."""
    header, rows = table
    index = [i for i, h in enumerate(header) if h.startswith(heading)]
    assert len(index) == 1, f"{name}: {len(index)} columns starting with {heading!r}"
    return {r[0]: r[index[0]] for r in rows}


# ---------------------------------------------------------------- the reports behind the headline

INCEPTION_FLOOR = _report("evaluation-real-train-vs-val-inception.json")["baselines"]
DOMAIN_FLOOR = _report("evaluation-real-train-vs-val.json")["baselines"]["floor"]
RELEASE = _report("inception-gpu-e541.json")["generated"]  # Inception features, 112 samples
RELEASE_DOMAIN = _report("evaluation-release-gpu-e541.json")["generated"]  # domain features, 500 samples
PREVIOUS = _report("inception-release-best-e87.json")["generated"]
PREVIOUS_DOMAIN = _report("evaluation-release-best-e87.json")["generated"]
REAL_VAL_MS_SSIM = _report("evaluation-release-gpu-e541.json")["real_ms_ssim"]
CALIBRATION = {f: _report(f"calibration-{f}.json")["rows"] for f in ("inception", "domain")}


def kid(r, std=True):
    return [r["kid"]["mean"], r["kid"]["std"]] if std else [r["kid"]["mean"]]


def prc(r, *keys):
    return [r["prdc"][k] for k in keys]


def copies(r):
    return [r["memorisation"]["pixels"]["copy_fraction"], r["memorisation"]["features"]["copy_fraction"]]


# ---------------------------------------------------------------- 1. headline tables, cell by cell

def test_readme_results_table_quotes_the_reports():
    name = "README.md"
    table = table_with(name, "validation split, Inception features", "KID", "precision / recall")
    floor = INCEPTION_FLOOR["floor"]
    expected = {
        "floor: real train vs val": (kid(floor, std=False), prc(floor, "precision", "recall")),
        "real train scans at 32x32": (kid(CALIBRATION["inception"]["32x32 bilinear"], std=False),
                                      prc(CALIBRATION["inception"]["32x32 bilinear"], "precision", "recall")),
        "released: `gpu` preset": (kid(RELEASE), prc(RELEASE, "precision", "recall")),
        "previous release: `best`, epoch 87": (kid(PREVIOUS), prc(PREVIOUS, "precision", "recall")),
        "paper recipe": (kid(_report("inception-paper-s0.json")["generated"], std=False),
                         prc(_report("inception-paper-s0.json")["generated"], "precision", "recall")),
        "Gaussian noise": (kid(INCEPTION_FLOOR["noise"], std=False), prc(INCEPTION_FLOOR["noise"], "precision", "recall")),
    }
    for label, (kid_values, pr_values) in expected.items():
        cells = row(table, label, name)
        assert_cell(cells["KID"], kid_values, f"{name} {label} KID")
        assert_cell(cells["precision / recall"], pr_values, f"{name} {label} precision / recall")


def test_readme_prose_quotes_the_release_reports():
    text = " ".join(_text("README.md").split())
    ms_ssim = re.search(r"MS-SSIM (\S+) against the real (\S+) \(500 samples\)", text)
    assert ms_ssim and agrees(ms_ssim[1], RELEASE_DOMAIN["ms_ssim"]) and agrees(ms_ssim[2], REAL_VAL_MS_SSIM), ms_ssim
    found = re.search(r"of 500 samples, (\S+) in pixels and (\S+) in domain features", text)
    assert found and [agrees(found[i + 1], v) for i, v in enumerate(copies(RELEASE_DOMAIN))] == [True, True], found
    assert re.search(r"still (\d+)x the floor", text)[1] == f"{RELEASE['kid']['mean'] / INCEPTION_FLOOR['floor']['kid']['mean']:.0f}"
    recall = re.search(r"recall (\S+) says it covers", text)[1]
    assert agrees(recall, RELEASE["prdc"]["recall"])


def test_results_aim_floor_table_is_the_evaluate_report():
    name = "docs/RESULTS.md"
    table = table_with(name, "Inception features, n = 112", "MS-SSIM")
    cells, floor = row(table, "real train vs val (floor)", name), INCEPTION_FLOOR["floor"]
    assert_cell(cells["KID"], kid(floor), name)
    assert_cell(cells["FID"], [floor["fid"]["value"]], name)
    for key in ("precision", "recall", "coverage"):
        assert_cell(cells[key], prc(floor, key), f"{name} floor {key}")
    assert_cell(cells["MS-SSIM"], [floor["ms_ssim"]], name)


def test_results_release_table_against_the_aim():
    name = "docs/RESULTS.md"
    table = table_with(name, "part of the aim", "released: `gpu`", "previous: `best`")
    floor, domain_floor = INCEPTION_FLOOR["floor"]["kid"]["mean"], DOMAIN_FLOOR["kid"]["mean"]
    for heading, inception, domain in (("released", RELEASE, RELEASE_DOMAIN), ("previous", PREVIOUS, PREVIOUS_DOMAIN)):
        col = column(table, heading, name)
        cell = {k.split(": ", 1)[1] if k.startswith("check: ") else k: v for k, v in col.items()}
        kid_cell = cell["Inception KID, as a multiple of the floor (0.0070)"]
        assert_cell(kid_cell, kid(inception), f"{name} {heading} Inception KID")
        assert re.search(r"\((\S+)x\)", kid_cell)[1] == f"{inception['kid']['mean'] / floor:.0f}", kid_cell
        assert_cell(cell["Inception precision / recall"], prc(inception, "precision", "recall"), name)
        domain_kid = cell["the target on domain features: KID, as a multiple of the domain floor (0.0036)"]
        assert_cell(domain_kid, kid(domain), f"{name} {heading} domain KID")
        assert agrees(re.search(r"\((\S+)x\)", domain_kid)[1], domain["kid"]["mean"] / domain_floor), domain_kid
        assert_cell(cell["the target on domain features: precision / recall"], prc(domain, "precision", "recall"), name)
        assert_cell(cell["MS-SSIM within set (real 0.180)"], [domain["ms_ssim"]], f"{name} {heading} MS-SSIM")
        assert_cell(cell["blank images"], [domain["blank_fraction"]], name)
        assert_cell(cell["copies of training scans, pixels / features"], copies(domain), f"{name} {heading} copies")
        assert_cell(cell["near-duplicates (real scans: 0)"], [domain["duplicate_fraction"]], name)
    assert "(0.0070)" in " ".join(table[0] + [r[0] for r in table[1]]) and agrees("0.0070", floor)
    assert agrees("0.0036", domain_floor) and agrees("0.180", REAL_VAL_MS_SSIM)


def test_results_first_gpu_run_table():
    name = "docs/RESULTS.md"
    table = table_with(name, "model", "Inception KID", "MS-SSIM, 500 samples")
    for label, inception, domain in (("`gpu` preset", RELEASE, RELEASE_DOMAIN), ("release then (`best`", PREVIOUS, PREVIOUS_DOMAIN)):
        cells = row(table, label, name)
        assert_cell(cells["Inception KID"], kid(inception), f"{name} {label}")
        assert_cell(cells["FID"], [inception["fid"]["value"]], f"{name} {label}")
        assert_cell(cells["precision / recall / coverage"], prc(inception, "precision", "recall", "coverage"), f"{name} {label}")
        assert_cell(cells["MS-SSIM, 500 samples (real 0.180)"], [domain["ms_ssim"]], f"{name} {label}")
        assert_cell(cells["copies, 500 samples (pixels / features)"], copies(domain), f"{name} {label}")
    text = " ".join(_text(name).split())
    share = re.search(r"Of the 112 samples of the Inception report, (\S+) are copies in pixels and none in Inception features", text)
    assert share and agrees(share[1], RELEASE["memorisation"]["pixels"]["copy_fraction"]) and RELEASE["memorisation"]["features"]["copy_fraction"] == 0


def test_results_inception_table_and_baselines():
    name = "docs/RESULTS.md"
    table = table_with(name, "Inception features, n = 112", "coverage", without=("MS-SSIM",))
    rows = {
        "released (`gpu`, epoch 541": (RELEASE, True),
        "previous release (`best`, epoch 87)": (PREVIOUS, True),
        "the release before (quick, epoch 80)": (_report("inception-release.json")["generated"], True),
        "ablation `best`, 15 min": (_report("inception-best-s0.json")["generated"], True),
        "ablation `paper` recipe, 15 min": (_report("inception-paper-s0.json")["generated"], True),
        "one real image repeated": (INCEPTION_FLOOR["repeat"], False),
        "Gaussian noise": (INCEPTION_FLOOR["noise"], False),
    }
    for label, (report, with_std) in rows.items():
        cells = row(table, label, name)
        assert_cell(cells["KID"], kid(report, with_std), f"{name} {label} KID")
        assert_cell(cells["FID"], [report["fid"]["value"]], f"{name} {label} FID")
        for key in ("precision", "recall", "coverage"):
            assert_cell(cells[key], prc(report, key), f"{name} {label} {key}")


def test_results_style_ada_cpu_row_is_its_inception_report():
    name, report = "docs/RESULTS.md", _report("inception-style-ada-cpu-e194.json")["generated"]
    cells = row(table_with(name, "run (Inception features, 112 samples)", "copies (pixels)"), "`style-ada`, 50 CPU minutes", name)
    assert_cell(cells["KID"], kid(report, True), f"{name} style-ada KID")
    assert_cell(cells["FID"], [report["fid"]["value"]], f"{name} style-ada FID")
    for key in ("precision", "recall", "coverage"):
        assert_cell(cells[key], prc(report, key), f"{name} style-ada {key}")
    assert cells["copies (pixels)"] == _pct(report["memorisation"]["pixels"]["copy_fraction"])


def test_results_long_run_table_quotes_the_checkpoint_reports():
    name = "docs/RESULTS.md"
    header, rows = table_with(name, "epoch", "`best` KID", "2x-wide KID")
    resumed = next(r for r in rows if r[0].startswith("+ 22 min"))  # `best` at epoch 87, the release of that time
    assert numbers(resumed[1])[:2] == [f"{PREVIOUS['kid']['mean']:.3f}", f"{PREVIOUS['kid']['std']:.3f}"] and "(87)" in resumed[1]
    assert_cell(resumed[2], prc(PREVIOUS, "precision"), name)
    assert_cell(resumed[3], prc(PREVIOUS, "recall"), name)
    wide, end = _report("inception-g2x-e47.json")["generated"], next(r for r in rows if r[0].startswith("end of the 105 min"))
    assert numbers(end[4])[0] == f"{wide['kid']['mean']:.3f}" and "(47)" in end[4]
    assert_cell(end[5], prc(wide, "precision"), name)
    assert_cell(end[6], prc(wide, "recall"), name)


def test_results_calibration_table_is_the_two_ladders():
    name = "docs/RESULTS.md"
    header, rows = table_with(name, "inception KID", "domain KID")
    assert len(rows) == len(CALIBRATION["inception"])
    for cells in rows:
        key = "real (floor)" if cells[0] == "real, undegraded" else cells[0]
        values = []
        for features in ("inception", "domain"):
            r = CALIBRATION[features][key]
            values += kid(r, std=False) + prc(r, "precision", "recall", "coverage")
        for cell, value in zip(cells[1:], values, strict=True):
            assert_cell(cell, [value], f"{name} calibration {cells[0]}")


def test_results_downstream_table():
    name = "docs/RESULTS.md"
    table = table_with(name, "training set", "accuracy", "ROC AUC")
    before, gpu = _report("downstream-release.json"), _report("downstream-release-gpu-e541.json")
    for label, r in (("real only", before["real_only"]), ("real + 480 synthetic COVID, released model", gpu["with_synthetic"]),
                     ("real + 480 synthetic COVID, previous release", before["with_synthetic"])):
        cells = row(table, label, name)
        assert_cell(cells["accuracy"], [r["accuracy_mean"], r["accuracy_std"]], f"{name} {label}")
        assert_cell(cells["ROC AUC"], [r["auc_mean"], r["auc_std"]], f"{name} {label}")
    text = " ".join(_text(name).split())
    quoted = re.search(r"the real-only row of the new release's run scored (\S+) ± (\S+) / (\S+) ± (\S+)\)", text)
    real = gpu["real_only"]
    assert quoted and all(agrees(s, v) for s, v in zip(quoted.groups(), [real["accuracy_mean"], real["accuracy_std"], real["auc_mean"], real["auc_std"]]))


def test_model_card_metrics_table():
    name = "models/release/MODEL_CARD.md"
    table = table_with(name, "metric", "released model", "(floor)", "previous release")
    floor = INCEPTION_FLOOR["floor"]
    released, floors, previous = (column(table, h, name) for h in ("released model", "real train vs validation (floor)", "previous release"))
    inception_copies = [RELEASE["memorisation"]["pixels"]["copy_fraction"], RELEASE["memorisation"]["features"]["copy_fraction"]]
    expected = {
        "Inception KID": (kid(RELEASE), kid(floor, std=False), kid(PREVIOUS)),
        "Inception FID (n = 112)": ([RELEASE["fid"]["value"]], [floor["fid"]["value"]], [PREVIOUS["fid"]["value"]]),
        "Inception precision / recall / coverage": tuple(prc(r, "precision", "recall", "coverage") for r in (RELEASE, floor, PREVIOUS)),
        "domain KID (layout only)": (kid(RELEASE_DOMAIN), kid(DOMAIN_FLOOR), kid(PREVIOUS_DOMAIN)),
        "domain precision / recall / coverage": tuple(prc(r, "precision", "recall", "coverage") for r in (RELEASE_DOMAIN, DOMAIN_FLOOR, PREVIOUS_DOMAIN)),
        "MS-SSIM within set, 500 samples (real validation scans: 0.180)": tuple([r["ms_ssim"]] for r in (RELEASE_DOMAIN, DOMAIN_FLOOR, PREVIOUS_DOMAIN)),
        "near-duplicates among samples (real: 0)": ([RELEASE_DOMAIN["duplicate_fraction"]], [], [PREVIOUS_DOMAIN["duplicate_fraction"]]),
        "blank fraction": ([RELEASE_DOMAIN["blank_fraction"]], [DOMAIN_FLOOR["blank_fraction"]], [PREVIOUS_DOMAIN["blank_fraction"]]),
        "copies of training images (pixels / features)": (inception_copies + copies(RELEASE_DOMAIN), [], copies(PREVIOUS_DOMAIN)),
    }
    assert set(expected) == set(released), sorted(set(expected) ^ set(released))
    for metric, values in expected.items():
        for col, value, heading in zip((released, floors, previous), values, ("released", "floor", "previous")):
            assert_cell(col[metric], value, f"{name} {metric} ({heading})")
    assert agrees("0.180", REAL_VAL_MS_SSIM)


def test_model_card_calibration_ladder_and_aim():
    name = "models/release/MODEL_CARD.md"
    text = " ".join(_text(name).split())
    ladder = CALIBRATION["inception"]
    for phrase, key in (("(std 0.05) scores KID", "noise 0.05"), ("a 1-pixel blur", "blur 1 px"), ("a 64x64 rebuild", "64x64 bilinear"),
                        ("noise of std 0.15 scores", "noise 0.15"), ("a 32x32 rebuild", "32x32 bilinear")):
        printed = re.search(re.escape(phrase) + r" (\d\.\d+)", text)
        assert printed and agrees(printed[1], ladder[key]["kid"]["mean"]), (phrase, printed)
    assert re.search(r"The released model \((\S+)\) sits between", text)[1] == f"{RELEASE['kid']['mean']:.3f}"
    aim = re.search(r"the KID is (\d+)x the floor and precision / recall are (\S+) / (\S+),", text)
    assert aim[1] == f"{RELEASE['kid']['mean'] / INCEPTION_FLOOR['floor']['kid']['mean']:.0f}"
    assert agrees(aim[2], RELEASE["prdc"]["precision"]) and agrees(aim[3], RELEASE["prdc"]["recall"])


# ---------------------------------------------------------------- 2. the floor: one row, wherever it is quoted

COLUMNS = {"FID": lambda r: [r["fid"]["value"]], "SWD": lambda r: [r["swd"]["mean"]], "MS-SSIM": lambda r: [r["ms_ssim"]],
           "precision": lambda r: prc(r, "precision"), "recall": lambda r: prc(r, "recall"), "coverage": lambda r: prc(r, "coverage"),
           "precision / recall": lambda r: prc(r, "precision", "recall"),
           "precision / recall / coverage": lambda r: prc(r, "precision", "recall", "coverage"),
           "blank": lambda r: [r["blank_fraction"]], "near-dups": lambda r: [r["duplicate_fraction"]], "n": lambda r: [r["n_generated"]]}


def _floor_rows():
    for name in HEADLINE:
        for header, rows in tables(_text(name)):
            for cells in rows:
                if re.search(r"\(floor\)$|^floor:", cells[0]):
                    yield name, header, cells


def test_every_floor_row_is_the_evaluate_report():
    seen = 0
    for name, header, cells in _floor_rows():
        kid_at = [i for i, h in enumerate(header) if "KID" in h]
        first = numbers(cells[kid_at[0]])[0]
        floor = INCEPTION_FLOOR["floor"] if agrees(first, INCEPTION_FLOOR["floor"]["kid"]["mean"]) else DOMAIN_FLOOR
        where = f"{name}: floor row {cells}"
        for i in kid_at:
            if cells[i]:
                assert_cell(cells[i], kid(floor, std="±" in cells[i]), where)
        for heading, cell in zip(header, cells):
            key = heading if heading in COLUMNS else heading.split(" (")[0].split(", ")[0]
            if key in COLUMNS and cell and cell != "n/a":
                assert_cell(cell, COLUMNS[key](floor), f"{where} [{heading}]")
        seen += 1
    assert seen >= 10  # README, aim, ablation, long-run, GPU-run, families and Inception tables


def test_floor_quoted_in_prose_and_columns_is_the_same():
    floor = INCEPTION_FLOOR["floor"]
    for name in HEADLINE:
        text = " ".join(_text(name).split())
        for printed in re.findall(r"floor(?:'s | \(|: KID | of )(0\.\d+)", text):
            assert printed == f"{floor['kid']['mean']:.4f}" or printed == f"{DOMAIN_FLOOR['kid']['mean']:.4f}", (name, printed)
    evaluation = column(table_with("docs/EVALUATION.md", "metric", "train as samples (112 of 480)", "floor"), "floor", "docs/EVALUATION.md")
    for metric, value in (("KID", floor["kid"]["mean"]), ("KID std", floor["kid"]["std"]), ("FID (n = 112 vs 112)", floor["fid"]["value"]),
                          ("precision", floor["prdc"]["precision"]), ("recall", floor["prdc"]["recall"]),
                          ("density", floor["prdc"]["density"]), ("coverage", floor["prdc"]["coverage"]),
                          ("MS-SSIM within set", floor["ms_ssim"]), ("SWD x1e3 (mean)", floor["swd"]["mean"])):
        assert_cell(evaluation[metric], [value], f"docs/EVALUATION.md floor {metric}")


# ---------------------------------------------------------------- 3. one printed value per headline quantity

def _fmt(value, decimals):
    return f"{value:.{decimals}f}"


def _pct(value):
    return f"{100 * value:.1f}%" if value else "0%"


# quantity -> (a regex for every way its value could be printed, the one printing the documents use)
QUANTITIES = {
    "release Inception KID": (r"0\.07(?:06\d*|07\d*|1)", _fmt(RELEASE["kid"]["mean"], 3)),
    "release Inception KID std": (r"(?<=0\.071 ± )0\.\d+", _fmt(RELEASE["kid"]["std"], 3)),
    "release Inception FID": (r"15[89]\.\d+", _fmt(RELEASE["fid"]["value"], 1)),
    "release Inception precision / recall": (r"0\.(?:39|4)\d* / 0\.(?:28|29|3)\d*", f"{RELEASE['prdc']['precision']:.2f} / {RELEASE['prdc']['recall']:.2f}"),
    "release Inception precision": (r"(?<=precision )0\.(?:39|40|41)\d*", _fmt(RELEASE["prdc"]["precision"], 2)),
    "release Inception recall": (r"(?<=recall )\(?0\.(?:28|29)\d*", _fmt(RELEASE["prdc"]["recall"], 2)),
    "release Inception coverage": (r"(?<=0\.29 / )0\.\d+", _fmt(RELEASE["prdc"]["coverage"], 2)),
    "release domain KID": (r"0\.01(?:38|39|4)\d*", _fmt(RELEASE_DOMAIN["kid"]["mean"], 4)),
    "release MS-SSIM (500 samples)": (r"(?<!below )0\.22[01]\d*", _fmt(RELEASE_DOMAIN["ms_ssim"], 3)),
    "release copies, pixels (500 samples)": (r"(?:2\.9|3\.0)\d*%", _pct(RELEASE_DOMAIN["memorisation"]["pixels"]["copy_fraction"])),
    "release copies, domain features (500 samples)": (r"3\.[56]\d*%", _pct(RELEASE_DOMAIN["memorisation"]["features"]["copy_fraction"])),
    "release copies, pixels (112 samples)": (r"1\.[78]\d*%", _pct(RELEASE["memorisation"]["pixels"]["copy_fraction"])),
    "previous release Inception KID": (r"0\.(?:2099\d*|210\d*)", _fmt(PREVIOUS["kid"]["mean"], 3)),
    "previous release Inception FID": (r"267\.[89]\d*", _fmt(PREVIOUS["fid"]["value"], 1)),
    "previous release domain KID": (r"0\.009[89]\d*", _fmt(PREVIOUS_DOMAIN["kid"]["mean"], 4)),
    "floor Inception KID": (r"(?<!± )0\.00(?:69\d*|7|70\d*|71\d*)", _fmt(INCEPTION_FLOOR["floor"]["kid"]["mean"], 4)),
    "floor Inception FID": (r"(?:111\.\d+|112\.0\d*)", _fmt(INCEPTION_FLOOR["floor"]["fid"]["value"], 1)),
    "floor Inception precision / recall": (r"0\.6[5-8]\d* / 0\.71\d*", " / ".join(_fmt(v, 2) for v in prc(INCEPTION_FLOOR["floor"], "precision", "recall"))),
    "domain floor KID": (r"0\.003[56]\d*", _fmt(DOMAIN_FLOOR["kid"]["mean"], 4)),
    "real validation MS-SSIM": (r"0\.1(?:797\d*|80)", _fmt(REAL_VAL_MS_SSIM, 3)),
}
# Lines holding another measurement whose value is close to a headline one: the calibration ladder's own
# draw of the real training scans (not the floor). Standard deviations ("± 0.007") are excluded by the patterns.
OTHER_MEASUREMENTS = (  # also a CPU screening row and a point of the style-ada curve, both on domain features
    "| real, undegraded |", "| cpu lean rpgan |", "| 120 | 57600 |",
)


@pytest.mark.parametrize("quantity", sorted(QUANTITIES))
def test_one_printed_value_per_headline_quantity(quantity):
    pattern, expected = QUANTITIES[quantity]
    found = {}
    for name in HEADLINE:
        for line in _text(name).splitlines():
            if line.startswith(OTHER_MEASUREMENTS):
                continue
            for match in re.findall(r"(?<![\w.])" + pattern + r"(?![\w.]*\d)", line):
                found.setdefault(match.lstrip("("), []).append(name)
    assert set(found) == {expected}, f"{quantity}: printed as {found}, the report gives {expected}"


# ---------------------------------------------------------------- 4. the aim, stated once

AIM_PHRASES = re.compile(r"within \d+x of the floor|precision >= |recall >= ")


def _aim_section():
    text = _text("docs/RESULTS.md")
    start = text.index("\n## The aim\n")
    return text[start:text.index("\n## ", start + 1)]


def test_the_aim_is_stated_once_in_results():
    aim = " ".join(_aim_section().split())
    assert "long-run target**: Inception KID within 2x of the floor, precision >= 0.6, recall >= 0.5" in aim
    assert "current milestone**: Inception KID within 5x of the floor, precision >= 0.5, recall >= 0.4" in aim
    for name in DOCUMENTS:
        text = _text(name).replace(_aim_section(), "") if name == "docs/RESULTS.md" else _text(name)
        assert AIM_PHRASES.findall(text) == [], f"{name} restates the aim: {AIM_PHRASES.findall(text)}"
    assert "](docs/RESULTS.md#the-aim)" in _text("README.md")
    assert "](../../docs/RESULTS.md#the-aim)" in _text("models/release/MODEL_CARD.md")


# ---------------------------------------------------------------- 5. names, paths, commands and targets exist

def _top_level_names(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _module_file(dotted):
    """covgan_utils.a.b -> its .py file (a package's __init__.py), or None."""
    path = ROOT.joinpath(*dotted.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def resolves(dotted):
    """`covgan_utils.x.y[.attr][.attr2]`: a module of the package, then at most one name defined in it (a class
    may add one attribute)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        file = _module_file(".".join(parts[:cut]))
        if file is not None:
            rest = parts[cut:]
            if not rest:
                return True
            if rest[0] not in _top_level_names(file):
                return False
            if len(rest) == 1:
                return True
            cls = [n for n in ast.parse(file.read_text()).body if isinstance(n, ast.ClassDef) and n.name == rest[0]]
            return len(rest) == 2 and bool(cls) and any(getattr(n, "name", None) == rest[1] for n in cls[0].body)
    return False


LEAF_MODULES = {}
for _file in sorted(PACKAGE.rglob("*.py")):
    _dotted = ".".join(_file.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    if ".cli" not in _dotted:
        LEAF_MODULES.setdefault(_dotted.rsplit(".", 1)[-1], _dotted)
STALE_MODULES = {"train", "sample", "scores", "encoder", "project", "models", "release", "tracking", "images", "data_cli", "autoencoder"}
FILE_SUFFIXES = {"json", "jsonl", "npz", "png", "gif", "md", "py", "sh", "csv", "h5", "txt", "zip", "keras", "html", "js", "ipynb",
                 "tmp", "gz", "pt", "bin", "corrupt", "toml", "cfg", "yml", "yaml"}
SPAN = re.compile(r"`([^`]+)`")  # inline code may wrap onto the next line
DOTTED = re.compile(r"(?<![\w./\[-])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)")  # not a TOML table name ([project.urls])


def _spans(name):
    """Inline code spans outside fenced blocks, and the fenced blocks [(language, text)]."""
    text = _text(name)
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [" ".join(span.split()) for span in SPAN.findall(prose)], blocks


@pytest.mark.parametrize("name", DOCUMENTS)
def test_module_names_in_the_documents_exist(name):
    spans, blocks = _spans(name)
    bad = []
    for span in spans + [b for lang, b in blocks if lang != "python"]:
        for dotted in DOTTED.findall(span):
            head, *rest = dotted.split(".")
            if rest and rest[-1] in FILE_SUFFIXES or dotted.startswith(("np.", "tf.", "jax.", "keras.", "cv2.")):
                continue
            if head == "covgan_utils":
                ok = resolves(dotted)
            elif head in LEAF_MODULES:
                ok = resolves(LEAF_MODULES[head] + "." + ".".join(rest))
            elif head in STALE_MODULES:
                ok = False
            else:
                continue
            if not ok:
                bad.append(dotted)
    for path in re.findall(r"(covgan_utils(?:/\w+)+(?:\.py|/))", " ".join(spans)):
        if not (ROOT / path).exists():
            bad.append(path)
    assert bad == [], f"{name} names what the package does not have: {bad}"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_python_blocks_import_and_call_what_exists(name):
    _, blocks = _spans(name)
    bad = []
    for lang, block in blocks:
        if lang != "python":
            continue
        tree = ast.parse(block)
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("covgan_utils"):
                for a in node.names:
                    dotted = f"{node.module}.{a.name}"
                    if not resolves(dotted):
                        bad.append(dotted)
                    aliases[a.asname or a.name] = dotted
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("covgan_utils")})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                dotted = f"{aliases[node.value.id]}.{node.attr}"
                if _module_file(aliases[node.value.id]) is not None and not resolves(dotted):
                    bad.append(dotted)
    assert bad == [], f"{name}: code blocks use names the package does not have: {bad}"


@pytest.mark.parametrize("name", DOCUMENTS)
def test_files_named_in_the_documents_exist(name):
    spans, _ = _spans(name)
    text = _text(name)
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    base = (ROOT / name).parent
    missing = [link for link in links if not link.startswith("http") and not (base / link).exists()]
    for span in spans:
        for path in re.findall(r"(?<![\w./-])((?:docs|tests|tools|covgan_utils|notebooks|models/release|models/domain_encoder)/[\w./*-]+)", span):
            path = path.rstrip(".")
            if not any(ROOT.glob(path)) and not (ROOT / path).exists():
                missing.append(path)
    assert missing == [], f"{name} names files that do not exist: {missing}"


def _subcommands(parser):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices if actions else {}


def _command_lines(name):
    _, blocks = _spans(name)
    for lang, block in blocks:
        if lang not in ("bash", "sh", ""):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].split(" & ")[0].rstrip(" &")
            if "python -m covgan_utils" in line:
                yield line[line.index("python -m covgan_utils") + len("python -m covgan_utils"):]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_commands_in_the_documents_parse(name):
    fields = {f.name for f in dataclasses.fields(config.Config)}
    bad = []
    for line in _command_lines(name):
        tokens = [t.strip("[]") for t in shlex.split(line)]
        parser, i = cli.build_parser(), 0
        while i < len(tokens) and tokens[i].startswith("--"):
            i += 1
        while i < len(tokens) and _subcommands(parser):
            if tokens[i] not in _subcommands(parser):
                bad.append(f"{line}: no command {tokens[i]!r}")
                break
            parser, i = _subcommands(parser)[tokens[i]], i + 1
        options, in_set = parser._option_string_actions, False
        for token in tokens[i:]:
            if token.startswith("--"):
                in_set = token == "--set"
                if token.split("=")[0] not in options:
                    bad.append(f"{line}: no option {token}")
            elif in_set and "=" in token and token.split("=")[0] not in fields:
                bad.append(f"{line}: no config field {token.split('=')[0]}")
    assert bad == [], bad


def test_make_targets_named_exist():
    targets = set(re.findall(r"^([\w-]+):", _text("Makefile"), flags=re.M))
    named = {t for name in DOCUMENTS for t in re.findall(r"`make ([\w-]+)", _text(name))}
    named |= {t for name in DOCUMENTS for t in re.findall(r"^make ([\w-]+)", _text(name), flags=re.M)}
    assert named and named <= targets, named - targets


def test_readme_layout_is_the_layering():
    header, rows = table_with("README.md", "layer", "unit", "what it holds")
    listed = [(int(layer), unit.strip("`").removesuffix("/").removesuffix(".py")) for layer, unit, _ in rows]
    expected = [(rank + 1, unit) for rank, units in enumerate(LAYERS) for unit in units if unit != "__main__"]
    assert listed == expected
    assert "`tests/test_layering.py`" in _text("README.md")


def test_no_document_quotes_a_test_count():
    for name in DOCUMENTS:
        counts = re.findall(r"\b\d+ (?:passed|failed|tests? pass\w*|cells? pass\w*)\b", _text(name))
        assert counts == [], f"{name} quotes a test count, which goes stale: {counts}"


def test_no_stale_module_names():
    old = r"covgan_utils\.(?:train|sample|scores|encoder|project|models|release|tracking|images)\b"
    stale = re.compile(old + r"|covgan_utils\.inversion\b(?!\.| import)")  # and the old inversion module, not the subpackage
    hits = [(name, m) for name in DOCUMENTS for m in stale.findall(_text(name))]
    assert hits == [], hits


def test_readme_reliability_counts_are_the_collected_tests(request):
    """The "Checked at the boundary" table's counts equal the tests this session collected from each file
    (skipped when the session did not collect that file: a run of a few test files)."""
    readme = _text("README.md")
    rows = re.findall(r"^  \| [^|]+ \| [^|]+ \| (\d+) \| `(tests/test_\w+\.py)` \|$", readme, flags=re.M)
    assert len(rows) == 5, rows
    collected = {}
    for item in request.session.items:
        collected[item.nodeid.split("::")[0]] = collected.get(item.nodeid.split("::")[0], 0) + 1
    missing = [file for _, file in rows if file not in collected]
    if missing:
        pytest.skip(f"this session did not collect {', '.join(missing)}")
    assert {file: int(count) for count, file in rows} == {file: collected[file] for _, file in rows}


def test_results_mixed_precision_table_is_the_check_report():
    name, report = "docs/RESULTS.md", _report("precision-check.json")
    table = table_with(name, "precision (Inception KID, n = 200)", "epoch 40, mean")
    for precision in ("float32", "mixed_bfloat16"):
        cells = row(table, f"`{precision}`", name)
        curves = {r["seed"]: dict(r["kid"]) for r in report["rows"] if r["precision"] == precision}
        for epoch in (10, 20, 30):
            assert_cell(cells[f"epoch {epoch}"], [curves[0][epoch], curves[1][epoch]], f"{name} {precision} epoch {epoch}")
        assert_cell(cells["epoch 40, seed 0"], [curves[0][40]], name)
        assert_cell(cells["epoch 40, seed 1"], [curves[1][40]], name)
        summary = report["summary"][precision]
        assert_cell(cells["epoch 40, mean"], [summary["mean"]], name)
        assert_cell(cells["epoch 40, range"], [summary["min"], summary["max"]], name)
    assert_cell(row(table, "real train vs val (floor", name)["epoch 40, mean"], kid(INCEPTION_FLOOR["floor"], std=False), name)
    assert report["summary"]["mixed_bfloat16"]["mean"] > report["summary"]["float32"]["max"]  # the default follows the check
    assert config.Config().precision == "float32" and all(p.precision == "float32" for p in config.PRESETS.values())


def test_readme_step_times_are_the_benchmark_report():
    """The README's step-time block is `covgan_utils.bench.document.readme_block` of docs/performance.json, number
    for number (its "not measured yet" line until that report exists); `bench --readme README.md` writes it."""
    report = ROOT / "docs" / "performance.json"
    expected = document.readme_block(json.loads(report.read_text()) if report.is_file() else None)
    text = _text("README.md")
    assert text.count(document.README_START) == 1 and expected in text, "rerun `python -m covgan_utils bench --render docs/performance.json --readme README.md`"
