"""Writes notebooks 00-02 from the cell lists below (outputs empty) and the shared setup cell of every
notebook (03 and 04 are edited by hand; only their setup cell is written here).
Run: python tools/make_notebooks.py"""
import pathlib
import re

import nbformat
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPO_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]  # the one place it is written
REPO = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
SETUP_MARK = "# Setup, the same in every notebook"
HAND_MADE = {"03_latent_widget.ipynb": True, "04_evaluate.ipynb": False}  # name -> needs the widget tools


def setup_cell(widget=False):
    """The setup cell: on Colab fetch the project and its pinned requirements, then `notebook.setup()`."""
    return f"""{SETUP_MARK}: on Colab, fetch the project ({REPO_URL}, from pyproject.toml) and its pinned requirements.
import os, pathlib, subprocess, sys
if "google.colab" in sys.modules and not os.path.isdir("covgan"):
    subprocess.run(["git", "clone", "-q", "--depth", "1", "{REPO_URL}", "covgan"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "covgan/requirements.txt"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "covgan"], check=True)
sys.path[:0] = [p for p in ("covgan", "..") if os.path.isdir(os.path.join(p, "covgan_utils"))]  # Colab clone / notebooks/
from covgan_utils.util import notebook
SMOKE = notebook.setup({"widget=True" if widget else ""})  # quiet backend start; True under COVGAN_SMOKE=1 (CI)"""


def header(name, title, text):
    badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name})"
    return [nbformat.v4.new_markdown_cell(f"{badge}\n\n# {title}\n\n{text}"), nbformat.v4.new_code_cell(setup_cell())]


NOTEBOOKS = {
    "00_data.ipynb": (
        "Data: the COVID-CT scans",
        "Locates the UCSD-AI4H COVID-CT scans, preprocesses them like the paper (grayscale, 128x128 area resize, "
        "[-1, 1], lateral flip) and splits them by patient. Research use only; not a diagnostic tool.",
        [
            "from covgan_utils import data, sample\nimport matplotlib.pyplot as plt\nimport numpy as np",
            "data_dir = data.find_data_dir()  # --data / $COVGAN_DATA / data/raw / ../shared/data/covid-ct\nprint(data_dir)",
            "ds = data.load_dataset(classes=data.CLASSES)  # cached under data/processed/ after the first load\nprint(data.describe(ds))",
            "covid = ds.subset(ds.classes == 'CT_COVID')\nplt.figure(figsize=(8, 8))\nplt.imshow(sample.make_grid(covid.images[:36]), cmap='gray')\nplt.axis('off');",
            "train_idx, val_idx = data.split_by_patient(covid.patients, val_fraction=0.2, seed=0)\n"
            "print(f'train {len(train_idx)} images / {len(set(covid.patients[train_idx]))} patients, '\n"
            "      f'validation {len(val_idx)} images / {len(set(covid.patients[val_idx]))} patients')\n"
            "assert set(covid.patients[train_idx]).isdisjoint(covid.patients[val_idx])",
            "plt.hist(covid.images.ravel(), bins=64)\nplt.xlabel('pixel value in [-1, 1]')\nplt.title('Pixel values use the full range');",
        ],
    ),
    "01_train.ipynb": (
        "Train the GAN",
        "Trains a preset into `models/<NNNNN>-<preset>/` (config, stats, sample grids, checkpoints). "
        "`quick` runs on a CPU; `paper` is the paper's exact recipe (GPU); `COVGAN_SMOKE=1` switches to `smoke`.",
        [
            "from covgan_utils import config, train, plots, sample\nimport matplotlib.pyplot as plt",
            "preset = config.default_preset()  # smoke under COVGAN_SMOKE=1, else $COVGAN_PRESET or quick\ncfg = config.get_preset(preset)\nprint(cfg)",
            "run_dir = train.train(cfg)  # interrupt and call train.train(cfg, run_dir, resume=True) to continue\nprint(run_dir)",
            "plots.plot_losses(run_dir);",
            "plots.plot_accuracy(run_dir);",
            "_, real = train.training_images(cfg)\nfake = sample.generate(sample.load_generator(run_dir), range(16))\nplots.plot_real_vs_generated(real[:16], fake);",
            "for path in plots.plot_run(run_dir):\n    print(path)",
        ],
    ),
    "02_interpolate.ipynb": (
        "Walk the latent space",
        "Disease-progression style walks between the noise vectors of two seeds: linear (the paper's) and spherical.",
        [
            "from covgan_utils import sample, train\nimport matplotlib.pyplot as plt\nimport numpy as np\nfrom IPython.display import Image",
            "run_dir = train.latest_run()  # None -> the released model in models/release/\ngenerator = sample.load_generator(run_dir)\n"
            "cfg = sample.model_config(run_dir)\ncovid = sample.class_label(cfg, 'covid')  # the class input of a conditional model; None for a COVID-only one\n"
            "print(run_dir or 'released model', cfg.arch, 'conditional' if cfg.conditional else 'unconditional')",
            "for mode in ('linear', 'slerp'):\n    strip = sample.interpolate(generator, seed_a=1, seed_b=2, steps=8, mode=mode, label=covid)\n"
            "    plt.figure(figsize=(16, 2.5))\n    plt.imshow(sample.make_grid(strip, cols=8), cmap='gray')\n    plt.title(mode)\n    plt.axis('off')",
            "if cfg.conditional:  # the same seeds as both classes\n"
            "    both = [sample.generate(generator, range(8), label=sample.class_label(cfg, c)) for c in ('covid', 'non-covid')]\n"
            "    plt.figure(figsize=(16, 4.5))\n    plt.imshow(sample.make_grid(np.concatenate(both), cols=8), cmap='gray')\n    plt.title('COVID (top) and non-COVID (bottom), same seeds')\n    plt.axis('off')",
            "out = pathlib.Path('interpolation.gif')\nsample.save_strip(sample.interpolate(generator, 1, 2, steps=12, mode='slerp', label=covid), out)\nImage(filename=str(out))",
        ],
    ),
    "05_progression.ipynb": (
        "Progression between real scans",
        "Projects real CT slices into the generator (GAN inversion), walks between two real scans of one patient, "
        "walks a non-COVID scan along the disease direction with the COVID classifier watching, and shows the "
        "follow-up table of `docs/PROGRESSION.md`. Research use only; not a diagnostic tool.",
        [
            "from covgan_utils import direction, followup, inversion, progression, project, sample, train\nimport matplotlib.pyplot as plt\nimport numpy as np\n"
            "from IPython.display import Markdown, display\n"
            "STEPS, STARTS = (10, 1) if SMOKE else (300, 4)  # optimisation steps and seeded starts per projection",
            "run_dir = None  # None: the released model; or a run folder under models/\ngenerator, cfg = sample.load_generator(run_dir), sample.model_config(run_dir)\n"
            "train_images, val, label = progression.covid_scans(cfg)  # COVID validation scans: patients the generator never saw",
            "targets = val[:6]\n_, encoder = inversion.load_or_train(run_dir, generator)  # f-AnoGAN-style encoder, cached beside the model\n"
            "methods = {m: inversion.project_with(m, generator, targets, encoder, label, num_steps=STEPS, starts=STARTS) for m in inversion.METHODS}\n"
            "for m, r in methods.items():\n    s = project.reconstruction_scores(r['images'], targets)\n    print(f\"{m:>17}: PSNR {s['psnr'].mean():.1f} dB, MS-SSIM {s['ms_ssim'].mean():.3f}\")",
            "plt.figure(figsize=(12, 9))\nplt.imshow(sample.make_grid(np.concatenate([targets] + [r['images'] for r in methods.values()]), cols=6), cmap='gray')\n"
            "plt.title('validation scans; projections by ' + ', '.join(methods) + ' (rows 2-4)')\nplt.axis('off');",
            "patient = followup.followups()[0]  # a patient with three or more dated scans\n"
            "first, last = followup.read_scans([patient['points'][k]['files'][0] for k in (0, -1)])\n"
            "walk = project.progression(generator, first, last, steps=8, label=label, num_steps=STEPS, starts=STARTS)\n"
            "plt.figure(figsize=(16, 2.5))\nplt.imshow(sample.make_grid(np.concatenate([walk['inputs'][:1], walk['frames'], walk['inputs'][1:]]), cols=10), cmap='gray')\n"
            "plt.title(f\"{patient['patient']}: real day {patient['points'][0]['day']:g}, the projected path, real day {patient['points'][-1]['day']:g}\")\nplt.axis('off');",
            "_, _, val_both, labels = train.training_split(cfg.replace(classes=('CT_COVID', 'CT_NonCOVID'), conditional=False))\n"
            "scan = val_both[np.flatnonzero(labels == 1)[0]]  # an unseen non-COVID scan\n"
            "edit = direction.disease_walk(scan, run_dir, num_steps=STEPS, starts=STARTS)  # class embedding (conditional) or fitted boundary\n"
            "p = direction.covid_probability(edit['frames'])\nprint('P(COVID) along the walk:', p.round(2), 'monotonic:', direction.rises_monotonically(p))\n"
            "plt.figure(figsize=(14, 2.5))\nplt.imshow(sample.make_grid(np.concatenate([scan[None], edit['frames']]), cols=8), cmap='gray')\nplt.axis('off');",
            "# The follow-up table, written by `python -m covgan_utils progression report` (minutes on a CPU)\n"
            "text = (train.paths.PROJECT_ROOT / 'docs' / 'PROGRESSION.md').read_text()\ndisplay(Markdown(text[text.index('## Walking'):]))",
        ],
    ),
}


def set_setup_cell(path, widget):
    """Replace a hand-made notebook's setup cell (the first code cell) by the shared one; outputs kept empty."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    first.source, first.outputs, first.execution_count = setup_cell(widget), [], None
    badge = nb.cells[0]
    badge.source = re.sub(r"colab.research.google.com/github/[^/]+/[^/]+/", f"colab.research.google.com/github/{REPO}/", badge.source)
    nbformat.write(nb, path)


def main():
    for name, (title, text, cells) in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = header(name, title, text) + [nbformat.v4.new_code_cell(c) for c in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, ROOT / "notebooks" / name)
    for name, widget in HAND_MADE.items():
        set_setup_cell(ROOT / "notebooks" / name, widget)


if __name__ == "__main__":
    main()
