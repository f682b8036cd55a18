"""Writes every notebook in notebooks/ from the cell lists below, outputs empty: this file is the one source
of their text and code (edit here, then run it; tests/test_notebooks.py checks the committed notebooks match).
The setup cell and the Colab badge take the repository address from pyproject.toml.
Run: python tools/make_notebooks.py"""
import pathlib
import textwrap

import nbformat
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
REPO_URL = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]  # the one place it is written
REPO = REPO_URL.removeprefix("https://github.com/").removesuffix(".git")
SETUP_MARK = "# Setup, the same in every notebook"
WIDGET_NOTEBOOKS = {"03_latent_widget.ipynb"}  # their setup also builds the widget's converter and JS libraries on Colab


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


def badge(name):
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name})"


def md(text):
    return ("markdown", textwrap.dedent(text).strip())


def code(text):
    return ("code", textwrap.dedent(text).strip())


SETUP_TEXT = md("""
    ## Setup

    The same cell opens every notebook. On Colab it clones the project and installs its pinned
    requirements; locally it finds `covgan_utils` one folder up. `notebook.setup()` then starts Keras
    and its backend with the TensorFlow/XLA/CUDA start-up messages, retracing warnings and saved-model
    log lines kept out of the outputs (`notebook.setup(verbose=True)` shows them). It returns `SMOKE`:
    `True` under `COVGAN_SMOKE=1`, which CI sets to run every notebook on tiny settings in seconds.
""")

# ---------------------------------------------------------------- 00: data

DATA = [
    md("""
        # 00 · The COVID-CT scans

        **Description:** find the UCSD-AI4H COVID-CT scans, preprocess them as the paper did (with one
        correction), split them by patient and look at them.

        **Research use only; not a diagnostic tool.**

        ## Introduction

        The paper *COVID-19-Affected Lung CT Image Generative Network* trains a DCGAN on the UCSD-AI4H
        COVID-CT dataset (X. Yang et al., arXiv:2003.13865): CT slices cut from COVID-19 preprints, in
        `CT_COVID/` and `CT_NonCOVID/`, with patient ids in two metadata CSV files. Everything later in
        this project (the GAN, the metrics, the latent widget, the progression walks) starts from the
        arrays this notebook builds, so it is worth checking them once by eye and by assertion.

        Three things differ from the paper, and each is checked below:

        1. **The pixel range.** The paper's public code read PNGs as floats in [0, 1] and then applied
           `(x - 127.5) / 127.5`, which squeezes every image into [-1, -0.992]: near-black training data,
           and a likely cause of the "black images" the paper reports (README, *Data*). Here the full
           [-1, 1] range is used.
        2. **A patient-level split.** The paper trains on every slice. Here 20% of the patients are held
           out (seed 0), so the metrics in notebook 04 compare samples with scans of patients the
           generator never saw.
        3. **Both classes are kept.** The paper's public code dropped the non-COVID scans; the widget
           (notebook 03) and the disease direction (notebook 05) need them.
    """),
    SETUP_TEXT,
    md("""
        ## Find the data

        `sources.find_data_dir` looks, in this order, at `--data DIR` / its argument, `$COVGAN_DATA`,
        `data/raw/` and `../shared/data/covid-ct`. Folders and the upstream release zips both work and
        are read in place; the source data is never modified. The CLI answers the same question with
        `python -m covgan_utils data locate`, and `python -m covgan_utils data download` fetches the
        upstream zips into `data/raw/` when nothing is found.
    """),
    code("""
        import matplotlib.pyplot as plt
        import numpy as np
        from covgan_utils import sampling
        from covgan_utils.data import dataset, decoding, sources

        data_dir = sources.find_data_dir()
        print(data_dir)
        assert data_dir.exists()
    """),
    md("""
        ## Load and preprocess

        `dataset.load_dataset` decodes every readable image with OpenCV (grayscale, RGB, RGBA, 16-bit PNG
        and JPEG all work), converts it to grayscale, resizes it to 128x128 with area interpolation,
        scales it to [-1, 1] and doubles the set with a left-right flip, as the paper did. Unreadable
        files are skipped with one `SkippedFilesWarning` that names them. The result is cached in
        `data/processed/`, so the second load takes a fraction of a second. This is what
        `python -m covgan_utils data describe` prints.
    """),
    code("""
        ds = dataset.load_dataset(classes=sources.CLASSES)  # both classes, with flips
        print(dataset.describe(ds))
        assert ds.images.shape[1:] == (128, 128, 1) and ds.images.dtype == np.float32
        assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
        assert set(ds.classes) == set(sources.CLASSES) and ds.flipped.mean() == 0.5
    """),
    md("""
        In the copy of the data this project was developed on, that is 296 COVID slices from 179
        patients and 334 non-COVID slices, doubled to 1260 images by the flip (README, *Data*;
        docs/WIDGET.md). A much smaller count means a partial download.

        ## Look at the COVID slices

        The first 36 COVID slices, as the generator will see them. Expect axial chest CT slices of many
        sizes, crops and contrasts: they were cut from figures of preprints, so some carry arrows,
        letters or rulers drawn on them. That variety is part of what the generator has to learn.
    """),
    code("""
        covid = ds.subset(ds.classes == "CT_COVID")
        plt.figure(figsize=(8, 8))
        plt.imshow(sampling.make_grid(covid.images[:36]), cmap="gray")
        plt.axis("off");
    """),
    md("""
        **How to read it.** Lungs are the dark regions inside the bright body outline; COVID-19 shows as
        hazy ground-glass patches and consolidations inside them. A grid of black or uniformly grey
        tiles would mean a decoding or scaling fault: exactly what the paper's generator was trained on
        without noticing (next cell).

        ## The pixel range: this project against the paper's code

        Both histograms below are of the same COVID slices. The first is what training here uses; the
        second re-creates the paper's public preprocessing from the 8-bit images (read as floats in
        [0, 1], then `(x - 127.5) / 127.5`). A test in `tests/` pins the full range, and this cell
        asserts it on the real data.
    """),
    code("""
        ours = covid.images
        paper = (decoding.to_uint8(ours) / 255.0 - 127.5) / 127.5  # the paper's public code, on [0, 1] floats
        fig, axes = plt.subplots(1, 2, figsize=(10, 3))
        for ax, x, title in zip(axes, (ours, paper), ("this project: [-1, 1]", "paper's code: squeezed")):
            ax.hist(x.ravel(), bins=64)
            ax.set(title=title, xlabel="pixel value")
        assert ours.min() < -0.9 and ours.max() > 0.9  # the full range is used
        assert paper.max() < -0.99  # the paper's inputs are all near-black
    """),
    md("""
        **How to read it.** The left histogram spreads over the whole of [-1, 1]: a small peak at -1 (black
        background), a broad hump around -0.5 (the lungs) and a tall peak at +1 (soft tissue and bone,
        saturated white in the lung window of these figures). The right one has the same shape, squeezed
        into [-1, -0.992]: on the scale of the generator's tanh output every pixel is the same near-black
        value, so a generator that learns this data learns to draw black images. A left histogram bunched
        in a narrow band would mean the scaling is broken here too.

        ## Split by patient

        Slices of one patient look alike, so a random split by slice would put near-copies of the
        validation scans into training and flatter every metric. `dataset.load_split` draws 20% of the
        patients of *both* classes (seed 0) and then keeps the requested class, so the GAN, the
        metrics' domain encoder and the widget all hold out the same patients. The paper did not hold
        out any. README, *Data*, gives this copy's numbers: 480 COVID training images from 141 patients
        and 112 validation images from 38 patients.
    """),
    code("""
        train, val = dataset.load_split()  # COVID scans; 20% of the patients held out, seed 0
        n_train, n_val = len(set(train.patients)), len(set(val.patients))
        print(f"train {len(train)} images / {n_train} patients, validation {len(val)} images / {n_val} patients")
        assert set(train.patients).isdisjoint(val.patients)  # no patient on both sides
        assert 0.1 < n_val / (n_train + n_val) < 0.35  # about a fifth of the patients held out
    """),
    md("""
        A patient on both sides would fail the first assertion; a held-out share far from a fifth would
        mean a wrong `val_fraction` or a broken patient-id column (for example a metadata file whose
        names do not match the image files; `%` and `_` spellings both match here).

        ## What to try next

        - Train on this data with notebook 01, or from a shell with
          `python -m covgan_utils train --preset quick`.
        - `python -m covgan_utils data export-cache OUT.npz` writes the preprocessed scans of both
          classes to one float16 file (14.7 MB for this copy, README *Training on a GPU*), which
          `--data` accepts wherever it accepts a folder: the way to take the data to a machine without
          the raw scans.
        - Pass another copy of the dataset with `dataset.load_dataset(path)` or `--data DIR` and compare
          the counts above.
    """),
]

# ---------------------------------------------------------------- 01: train

TRAIN = [
    md("""
        # 01 · Train the GAN

        **Description:** train a preset into a self-describing run folder, then read its loss and
        accuracy curves and compare its samples with real scans.

        **Research use only; not a diagnostic tool.**

        ## Introduction

        The paper trains a DCGAN: 100-d Gaussian noise, a generator of transposed convolutions, a
        convolutional discriminator, binary cross-entropy, Adam 2e-4 with beta1 0.5, batch 50, 5000
        epochs, with one or two generator steps per discriminator step. That recipe is here, exactly,
        as the `paper` preset (a 287.6M-parameter generator; README, *Presets*). On a 2-core CPU a
        step of it takes 13.9 s, so its 5000 epochs would take about a week: it is meant for a GPU.

        This notebook trains `quick` by default: the same doubling/halving design with
        nearest-resize + 3x3 convolutions instead of transposed ones (no checkerboard texture), the
        non-saturating loss with lazy R1, DiffAugment (translation, cutout) with an adaptive
        probability and a generator EMA, 80 epochs. In the equal-compute ablation of docs/RESULTS.md
        (*Every remedy on its own*), resize-convolutions were the single most useful change and the
        paper's 2:1 schedule the worst row. With `COVGAN_SMOKE=1` the `smoke` preset trains a tiny
        model for 2 epochs on 40 images; `COVGAN_PRESET=paper` (or any preset name) picks another.
    """),
    SETUP_TEXT,
    md("""
        ## Choose a preset

        `config.default_preset()` is `smoke` under `COVGAN_SMOKE=1`, else `$COVGAN_PRESET`, else
        `quick`. A preset is a `Config` dataclass; any field can be changed with
        `config.get_preset("quick", g_steps=2, loss="hinge")`, or `--set KEY=VALUE` on the command line.
        The cell prints the recipe fields of the chosen preset beside the paper's (`arch="paper"` is the
        paper's own network; the others are the lean family sized by `g_widths` and `d_widths`).

        On a CPU, train under TensorFlow (the default `KERAS_BACKEND`): XLA's CPU convolutions make JAX
        several times slower on the same cores, and training under JAX without a GPU warns so. On GPUs
        both backends run the same code. Every field is checked on creation: a value outside its range
        (`batch_size=0`, `lr_g=nan`) is a one-line error naming the field and the range, before any work.
    """),
    code("""
        import numpy as np
        from IPython.display import Image, display
        from covgan_utils import config, plots, runs, sampling
        from covgan_utils.data import dataset
        from covgan_utils.training import loop
        from covgan_utils.util import files

        cfg, paper = config.get_preset(config.default_preset()), config.get_preset("paper")
        for name in ("arch", "upsample", "loss", "r1_gamma", "augment", "ema_decay", "g_steps", "d_dropout", "batch_size", "epochs", "guard"):
            print(f"{name:>10}: paper {getattr(paper, name)!r:<12} {cfg.preset} {getattr(cfg, name)!r}")
    """),
    md("""
        ## Train

        `loop.train(config)` is the whole job: it loads the patient-level training split of notebook 00,
        builds the generator and discriminator, and trains with the callbacks the config asks for. It is
        the function `python -m covgan_utils train --preset quick` calls. It writes a new run folder
        `models/<NNNNN>-<preset>/` holding `config.json`, `stats.jsonl` (one line per epoch),
        `samples-<epoch>.png` (a grid of fixed seeds) and `checkpoint-<epoch>.npz` (weights, optimizer
        and random-stream state). The progress bar shows the latest losses.

        Interrupting the kernel loses at most one checkpoint interval:
        `loop.train(cfg, run_dir, resume=True)` continues from the newest checkpoint and ends bit for
        bit where an uninterrupted run would (tested). On the 2-core CPU of docs/RESULTS.md `quick` took
        32.5 minutes for its 80 epochs with the cores shared (README, *Presets*); `smoke` takes seconds.
    """),
    code("""
        run_dir = loop.train(cfg)
        stats = files.read_jsonl(run_dir / "stats.jsonl")
        print(run_dir, f"{len(stats)} epochs")
        assert [row["epoch"] for row in stats] == list(range(1, cfg.epochs + 1))
        assert all(np.isfinite([row["g_loss"], row["d_loss"]]).all() for row in stats)
        assert (run_dir / "config.json").is_file() and list(run_dir.glob("checkpoint-*.npz"))
    """),
    md("""
        ## Losses

        One value per epoch for each network.
    """),
    code("""
        plots.plot_losses(run_dir);
    """),
    md("""
        **How to read it.** A GAN's losses do not fall to zero the way a classifier's do: the two
        networks play against each other, and a healthy run shows both curves settling into a band
        after the first epochs. Warning signs: the discriminator loss sinking towards 0 while the
        generator loss climbs without limit (the discriminator has won and the generator gets no useful
        gradient), or a sudden jump to NaN (divergence). With `guard=True` (the `best` and `gpu`
        presets) the divergence guard checks for these after every epoch, rolls back to a checkpoint and
        halves the learning rates (README, *Divergence guard*). A smoke run has two points: it only
        shows that the pipeline runs.

        ## Discriminator accuracy

        The share of real images the discriminator calls real, and of generated images it calls fake.
    """),
    code("""
        plots.plot_accuracy(run_dir);
        assert all(0.0 <= row[k] <= 1.0 for row in stats for k in ("d_acc_real", "d_acc_fake"))
    """),
    md("""
        **How to read it.** Curves that stay away from 0 and 1 mean the game is balanced. Both pinned
        at 1.0 for many epochs mean the discriminator separates everything: the generator has stopped
        learning, which is one of the guard's trip conditions. The adaptive augmentation of `quick`
        (`ada_target` 0.6) raises its probability when the discriminator grows too sure of real images,
        which keeps accuracy on real images from creeping up to 1.

        ## Real against generated

        Sixteen training scans beside the samples of seeds 0..15. `runs.load_generator(run_dir)` loads
        the newest checkpoint's generator (its EMA weights when the run keeps them); the noise of seed
        `s` is `np.random.RandomState(s).randn(100)`, so every image here can be re-created later from
        its seed alone.
    """),
    code("""
        _, real = dataset.training_images(cfg)
        generator = runs.load_generator(run_dir)
        fake = sampling.generate(generator, range(16))
        assert fake.shape == (16, 128, 128, 1) and fake.min() >= -1.0 and fake.max() <= 1.0
        plots.plot_real_vs_generated(real[:16], fake);
    """),
    md("""
        **How to read it.** After `quick`'s 80 epochs the samples should be recognisable lungs in a body
        outline, of varied shape and size. The failures to look for: **mode collapse**, where the
        samples are near-identical to one another (a generator that found one image the discriminator
        accepts); **the paper's black images**, flat dark tiles; and a fine **checkerboard** texture,
        the signature of transposed convolutions, which the `paper` preset shows and `quick` should
        not. After a 2-epoch smoke run the samples are still noise-like blobs; that is expected.
        Notebook 04 puts numbers on all of this.

        ## The sample grids written during training

        The run folder keeps a grid of the fixed seeds 0..35 (16 in smoke runs) every `sample_every`
        epochs, so progress can be followed without loading anything. This is the newest.
    """),
    code("""
        grids = sorted(run_dir.glob("samples-*.png"))
        assert grids, "the run wrote no sample grid"
        display(Image(filename=str(grids[-1])))
    """),
    md("""
        **How to read it.** The same seed sits in the same tile of every grid, so flicking through the
        grids of one run shows each sample forming. A tile that changes completely from one grid to the
        next late in training means the generator is still jumping between modes.

        ## Figures for the run folder

        `plots.plot_run` writes the figures above into the run folder (`losses.png`, `accuracy.png`,
        `real_vs_generated.png`, and `metrics.png` when the run logged metrics): the same as
        `python -m covgan_utils plot --run RUN`.
    """),
    code("""
        written = plots.plot_run(run_dir)
        for path in written:
            print(path)
        assert all(path.is_file() and path.stat().st_size > 0 for path in written)
    """),
    md("""
        ## What to try next

        - Train the paper's exact recipe on a GPU: `python -m covgan_utils train --preset paper`, or the
          2:1 schedule with `--set g_steps=2`. docs/RESULTS.md puts the paper's 5000 epochs at about 25
          GPU-minutes of compiled steps on one H100.
        - Train longer: `best` is `quick` for 400 epochs with the divergence guard on; `--minutes M` stops
          after the first epoch past a time budget, and `--resume` continues a run.
        - Train in mixed precision: `config.get_preset("quick", precision="mixed_bfloat16")` computes the
          networks in bfloat16 (faster on CPUs with AMX or AVX512-BF16 and on recent GPUs) and keeps
          weights, optimizer state and losses in float32; docs/RESULTS.md ("Mixed precision") compares
          its quality with float32.
        - Watch a run in TensorBoard: every run folder has a `tensorboard/` folder;
          `tensorboard --logdir models/`.
        - Change one thing at a time, e.g. `config.get_preset("quick", loss="hinge", spectral_norm=True)`,
          and score the runs with notebook 04: the per-remedy ablation in docs/RESULTS.md was built this
          way.
        - The other model families (`style`, `fastgan`, `conditional=True`) train through the same
          `loop.train`; on the GPU ablation of docs/RESULTS.md none beat the plain lean model.
    """),
    md("""
        ## The paper's own model

        Everything above trains the project's recipe. This section draws the paper's own figures from
        a run of the paper's own model: the `paper` preset (its 287.6M-parameter DCGAN, binary
        cross-entropy, Adam 2e-4, batch 50, float32), with one generator step per discriminator step
        ("1:1") or two ("2:1"). The paper's public code also scaled its data differently: it read the
        PNGs as floats in [0, 1] and then applied `(x - 127.5) / 127.5`, so every scan it trained on lay
        in [-1, -0.992], near-black. `scaling="paper-code"` reproduces that (`covgan_utils.data.scaling`):
        the model trains on the squeezed scans, and its samples are shown, checked and scored through
        the inverse mapping, as the paper's code would have saved them. Putting a "1:1" run beside a
        "1:1 paper-code" run separates what the network and schedule do from what the scaling does.

        The model is meant for a GPU. `tools/gpu_run.sh paper BUNDLE OUT --minutes 8` trains the
        variants one after the other on the GPU machine (`--runs 1:1 2:1 "1:1 paper-code"` picks them;
        the minutes are shared) and returns one tar per run with 500 samples, the per-epoch logs, the
        sample grids and an interpolation strip (README, *Training on a GPU*). Here
        `python -m covgan_utils paper-job-score --job OUT` unpacks them beside `OUT` and scores the
        samples against the validation split. Set `COVGAN_PAPER_RUN` to the returned folder `OUT`
        (or to a run folder of the `paper` preset) before starting the notebook; without it the cells
        below say so and draw nothing.
    """),
    code("""
        import os
        from covgan_utils.studies import paper_job

        paper_path = os.environ.get("COVGAN_PAPER_RUN")
        paper_runs = paper_job.run_folders(paper_path) if paper_path else {}
        print(f"paper runs: {', '.join(paper_runs)}" if paper_runs else "COVGAN_PAPER_RUN is not set: the paper's figures are skipped")
        assert all((folder / "stats.jsonl").is_file() for folder in paper_runs.values())
    """),
    md("""
        ### Losses and discriminator accuracy (the paper's Figs. 6 and 7)

        The same curves as above, one pair per run, then the health log the paper job keeps: the share
        of near-constant (blank) samples in a fixed batch of 32 seeds, and their mean MS-SSIM with one
        another, after every epoch.
    """),
    code("""
        for name, folder in paper_runs.items():  # each figure's title names the run's folder
            plots.plot_losses(folder)
            plots.plot_accuracy(folder)
            if (folder / "health.jsonl").is_file():
                plots.plot_health(folder)
    """),
    md("""
        **How to read it.** The paper's figures show the discriminator's loss falling and its accuracy
        on both real and generated images climbing towards 1: a discriminator that has won. Compare the
        runs at the same epoch. A blank fraction near 1 is the paper's "black images"; an MS-SSIM far
        above that of real scans (0.180 for the validation scans, docs/RESULTS.md) means the samples look
        alike: mode collapse. For a "paper-code" run these numbers are measured on the samples as its
        code would have shown them, so a collapse to black shows up here too.

        ### Samples beside real scans (Figs. 5 and 8)

        Sixteen training scans beside sixteen samples of each run: seeds 0..15 of its last epoch (the
        returned `samples.npz`, or the newest checkpoint of a run folder).
    """),
    code("""
        if paper_runs:
            _, paper_real = dataset.training_images(config.Config.load(next(iter(paper_runs.values()))))
        for name, folder in paper_runs.items():
            paper_fake = paper_job.samples_of(folder, 16)
            assert paper_fake.shape == (16, 128, 128, 1) and paper_fake.min() >= -1.0 and paper_fake.max() <= 1.0
            plots.plot_real_vs_generated(paper_real[:16], paper_fake).suptitle(name, y=1.02)
    """),
    md("""
        **How to read it.** Look for the three failures named above: flat dark tiles, near-identical
        tiles, and the checkerboard texture of transposed convolutions. The montage below shows the
        fixed-seed grid at a few epochs of each run, so one can see when a failure set in.
    """),
    code("""
        for name, folder in paper_runs.items():
            if (folder / "montage.png").is_file():
                print(name)
                display(Image(filename=str(folder / "montage.png")))
    """),
    md("""
        ### Interpolation (Fig. 9)

        Eight images on the straight line between the noise of seed 0 and seed 1, as the paper walks
        its latent space.
    """),
    code("""
        for name, folder in paper_runs.items():
            print(name)
            display(Image(filename=str(paper_job.interpolation_strip(folder))))
    """),
    md("""
        **How to read it.** A generator that has learned a smooth map changes the lungs gradually from
        one end to the other; one that has collapsed shows the same image all along, and a blank one a
        row of dark tiles. The numbers behind all of this, KID and FID against the held-out scans per
        run, are in the `scores.json` that `paper-job-score` writes.
    """),
]

# ---------------------------------------------------------------- 02: interpolate

INTERPOLATE = [
    md("""
        # 02 · Walk the latent space

        **Description:** decode the straight and the spherical path between the noise vectors of two
        seeds, as strips and as a GIF.

        **Research use only; not a diagnostic tool.**

        ## Introduction

        The paper presents its disease-progression figures as *linear interpolation strips*: two random
        noise vectors, the points on the straight line between them, and the generator's image of each.
        A smooth strip says the generator has learned a continuous space of scans rather than a lookup
        table of training images. The same strips are drawn here, beside spherical interpolation
        (slerp, White 2016), which keeps the path at the radius where Gaussian noise lives.

        Neither end of such a strip is a patient: both are random draws. Notebook 05 walks between real
        scans of one patient instead.
    """),
    SETUP_TEXT,
    md("""
        ## Load a generator

        `runs.latest_run()` is the newest GAN run folder in `models/` that holds a checkpoint (the one
        notebook 01 trained), or `None`, which `runs.load_generator` and `runs.model_config` read as the
        released generator in `models/release/` (the `gpu` preset at epoch 541; README, *Pretrained
        generator*). For a class-conditional model `sampling.class_label` gives the COVID class input;
        for a COVID-only model it is `None`.
    """),
    code("""
        import matplotlib.pyplot as plt
        import numpy as np
        from IPython.display import Image
        from covgan_utils import runs, sampling

        run_dir = runs.latest_run()
        generator, cfg = runs.load_generator(run_dir), runs.model_config(run_dir)
        covid = sampling.class_label(cfg, "covid")
        print(run_dir or "released model", cfg.arch, "conditional" if cfg.conditional else "unconditional")
        assert sampling.latent_dim_of(generator) == cfg.latent_dim
    """),
    md("""
        ## Why a spherical path

        In 100 dimensions a Gaussian noise vector almost always has a norm close to sqrt(100) = 10. The
        midpoint of the straight line between two such vectors is much shorter (about 7 for two
        independent draws), so a linear walk passes through noise the generator rarely saw in training.
        Slerp follows the great circle instead and keeps the norm. The cell prints the norms along both
        paths for seeds 1 and 2.
    """),
    code("""
        z_a, z_b = sampling.noise_for_seeds([1, 2], cfg.latent_dim)
        lerp_norms = np.linalg.norm(sampling.lerp(z_a, z_b, 9), axis=1)
        slerp_norms = np.linalg.norm(sampling.slerp(z_a, z_b, 9), axis=1)
        print("linear:   ", lerp_norms.round(1))
        print("spherical:", slerp_norms.round(1))
        assert lerp_norms[4] < slerp_norms[4]  # the straight line dips towards the origin; the great circle does not
    """),
    md("""
        ## Linear and spherical strips

        `sampling.interpolate` decodes `steps` points on the path between the noise of two seeds, ends
        included. It is the function behind
        `python -m covgan_utils interpolate --run RUN --seed-a 1 --seed-b 2 --steps 8 [--mode slerp]`.
        The first and last frames must be exactly the samples of seeds 1 and 2, which the cell asserts.
    """),
    code("""
        strips = {mode: sampling.interpolate(generator, 1, 2, steps=8, mode=mode, label=covid) for mode in ("linear", "slerp")}
        ends = sampling.generate(generator, [1, 2], label=covid)
        fig, axes = plt.subplots(2, 1, figsize=(16, 5))
        for ax, (mode, strip) in zip(axes, strips.items()):
            assert strip.shape == (8, 128, 128, 1) and np.allclose(strip[[0, -1]], ends, atol=1e-4)
            ax.imshow(sampling.make_grid(strip, cols=8), cmap="gray")
            ax.set_title(mode)
            ax.axis("off")
    """),
    md("""
        **How to read it.** A good strip changes gradually: the body outline, the lung shapes and the
        lesions morph from one end to the other, and every frame looks like a plausible scan. Things to
        look for: a frame in the middle of the **linear** strip that is blurrier or fainter than the
        ends (the norm dip above); a sudden jump between two neighbouring frames (a fold in the latent
        space); and a strip whose frames are all the same image (mode collapse: the generator ignores
        its input). The frame-to-frame change printed below makes the jumps visible as numbers.
    """),
    code("""
        for mode, strip in strips.items():
            steps = np.abs(np.diff(strip, axis=0)).mean(axis=(1, 2, 3))  # mean absolute change per step
            print(f"{mode:>6}: change per step", steps.round(3))
            assert np.all(np.isfinite(steps))
    """),
    md("""
        Roughly equal numbers along a strip mean an even walk; one step much larger than the others is
        a jump. All zeros would mean the generator's output does not depend on its noise.

        ## A conditional model: the same seed as both classes

        A class-conditional model (`conditional=True`) takes the class as a second input, so one seed
        can be drawn as COVID and as non-COVID. For the COVID-only models of the shipped presets this
        cell only says so.
    """),
    code("""
        if cfg.conditional:
            both = [sampling.generate(generator, range(8), label=sampling.class_label(cfg, c)) for c in ("covid", "non-covid")]
            plt.figure(figsize=(16, 4.5))
            plt.imshow(sampling.make_grid(np.concatenate(both), cols=8), cmap="gray")
            plt.title("COVID (top) and non-COVID (bottom), same seeds")
            plt.axis("off")
        else:
            print(f"{run_dir or 'the released model'} is unconditional: it draws {', '.join(cfg.classes)} only")
    """),
    md("""
        **How to read it** (conditional models only). Each column should keep the body and the slice
        level of its seed while the lung texture changes with the class. Two rows that look the same
        mean the class input is ignored; every column alike is the collapse that the FastGAN-style
        family showed when conditioned (docs/RESULTS.md, *Model families*).

        ## An animated GIF

        `sampling.save_strip` writes frames as a one-row PNG or, for a `.gif`, as an animation that
        walks forth and back. The GIF lands in `notebooks/` (git-ignored there).
    """),
    code("""
        out = pathlib.Path("interpolation.gif")
        sampling.save_strip(sampling.interpolate(generator, 1, 2, steps=12, mode="slerp", label=covid), out)
        assert out.stat().st_size > 0
        Image(filename=str(out))
    """),
    md("""
        ## What to try next

        - Walk between other seeds (`--seed-a`, `--seed-b`): every image has a seed, so a sample found in
          a grid can be the end of a walk.
        - Try a style-based model (`--preset style`) with `--truncation 0.7`, which pulls samples towards
          the average and trades variety for typical-looking scans.
        - Walk between *real* scans instead of random seeds: notebook 05 projects scans into the
          generator and walks between a patient's first and last scan.
    """),
]

# ---------------------------------------------------------------- 03: latent widget

WIDGET = [
    md("""
        # 03 · The latent-space widget

        **Description:** train a dense autoencoder with a 2-D bottleneck on the COVID and non-COVID
        scans, export its decoder to TensorFlow.js, and explore the 2-D map in the browser.

        **Research use only; not a diagnostic tool.**

        ## Introduction

        The paper's appendix trains a dense autoencoder (five Dense layers down to a 2-D latent space,
        mirrored decoder) and shows the latent plane as a map of scans. This notebook trains the same
        architecture, but differs in three ways (docs/WIDGET.md):

        - it trains on the COVID **and** non-COVID scans (the paper's public code dropped the non-COVID
          ones), with the patient-level split of notebook 00, so reconstruction error is measured on
          patients the model never saw;
        - every error is reported beside a baseline that always predicts the mean training image;
        - the decoder runs live in the browser: the page decodes the point under the cursor with
          TensorFlow.js and draws it as an image and as a rotatable 3-D point cloud, with generated
          scans of the GAN as a third colour of dots.

        The `paper` preset trains 100 epochs (532 s on the 2-core CPU of docs/WIDGET.md);
        `COVGAN_PRESET=quick` trains 20; `COVGAN_SMOKE=1` trains a tiny model in seconds.
    """),
    SETUP_TEXT,
    md("""
        ## Configure

        `autoencoder.get_config` takes a preset name (`paper`, `quick` or `smoke`) and field overrides.
        The widths are the encoder's Dense layers; the decoder mirrors them.
    """),
    code("""
        import matplotlib.pyplot as plt
        import numpy as np
        from covgan_utils import runs
        from covgan_utils.util import files
        from covgan_utils.widget import autoencoder, export, server

        preset = "smoke" if SMOKE else os.environ.get("COVGAN_PRESET", "paper")
        ae_config = autoencoder.get_config(preset if preset in autoencoder.PRESETS else "paper")
        print(ae_config.preset, "widths", ae_config.widths, f"{ae_config.epochs} epochs")
        assert ae_config.latent_dim == 2  # the widget draws a 2-D map
    """),
    md("""
        ## Train the autoencoder

        `autoencoder.train_autoencoder` is the whole job, as `python -m covgan_utils widget train` runs
        it: MSE loss, Adam 1e-3, batch 32, then the reconstruction error of the train and validation
        images and of the mean-image baseline, and the latent coordinates of every real scan. It writes
        `models/<NNNNN>-autoencoder[-<preset>]/` with `config.json`, `stats.jsonl`, `metrics.json`,
        `autoencoder.keras` and `latents.npz`.
    """),
    code("""
        run = autoencoder.train_autoencoder(ae_config, verbose=1 if SMOKE else 2)
        metrics = files.read_json(run / "metrics.json", "retrain with autoencoder.train_autoencoder")
        assert (run / autoencoder.MODEL_FILE).is_file() and np.isfinite(metrics["mse_val"])
        assert SMOKE or metrics["mse_val"] < metrics["baseline_mse_val"]  # beats the mean image on unseen patients
    """),
    md("""
        **How to read it.** Errors are mean squared errors on [-1, 1] and on the 0-255 scale the paper
        used (x 127.5²). docs/WIDGET.md measured, for the `paper` preset after 100 epochs, 2315 on
        training and 3778 on validation images against 5709 / 5478 for the mean image: through a 2-D
        bottleneck the autoencoder explains about 60% of the pixel variance of training scans and about
        31% on held-out patients. The paper reports about 240 without a split or a baseline, which could
        not be reproduced. A validation error at or above the baseline (asserted outside smoke runs)
        means the model learned nothing that generalises; a training error far below the validation
        error means overfitting, which this model does after about 20 epochs (`best_val_epoch` in
        `metrics.json`).

        ## The latent map

        Every real scan as a point of the 2-D latent space, coloured by class; this is the map the
        widget draws.
    """),
    code("""
        with np.load(run / autoencoder.LATENTS_FILE) as latents:
            z, classes = latents["real_z"], latents["real_classes"]
        assert z.shape[1] == 2 and np.isfinite(z).all() and len(z) == len(classes)
        plt.figure(figsize=(5, 5))
        for name, colour in (("CT_COVID", "tab:red"), ("CT_NonCOVID", "tab:blue")):
            plt.scatter(*z[classes == name].T, s=6, c=colour, label=name)
        plt.legend()
        plt.title("real scans in the autoencoder's latent plane");
    """),
    md("""
        **How to read it.** Expect the two classes to overlap in a dense middle (docs/WIDGET.md shows the
        same on the paper-preset map): a 2-D code of 16384 pixels keeps mostly body size, slice level and
        brightness, and the COVID lesions are a small part of an image. Some separation towards the edges
        of the cloud is what to hope for. All points on one line or one spot would mean the
        encoder collapsed (its ReLU layers died), which a smoke run's tiny widths can do.

        ## Export to TensorFlow.js

        `export.export_widget` writes a self-contained page: `index.html`, the TF.js graph model of the
        decoder, `points.json` (latent coordinates, classes, file names, split) and a sprite of
        thumbnails; `python -m covgan_utils widget export` runs it. The generated dots come from the GAN
        run of notebook 01 or, when there is none, from the released generator. The converter runs in
        its own `.venv-tfjs/` (`make install-widget`; docs/WIDGET.md says why). Smoke runs export next
        to, not over, the real widget.
    """),
    code("""
        gan = runs.latest_run() or "release"
        n_generated = 64 if SMOKE else 256
        out_dir = export.DEFAULT_OUT.with_name("latent_widget_smoke") if SMOKE else export.DEFAULT_OUT
        out = export.export_widget(run, gan=gan, out_dir=out_dir, n_generated=n_generated, cdn_fallback=True)
        points = files.read_json(out / "points.json", "export the widget again")
        print(sorted(p.name for p in out.iterdir()))
        assert (out / "index.html").is_file() and (out / "model" / "model.json").is_file()
        assert len(points["real"]["z"]) == len(z) and len(points["generated"]["z"]) == n_generated
    """),
    md("""
        ## The widget

        Served on 127.0.0.1 from this kernel and shown inline (an IFrame in JupyterLab, the kernel's
        port proxied on Colab); from a shell, `python -m covgan_utils widget serve`. Move over the map
        to decode the point under the cursor; drag the 3-D view to rotate it. Red dots are COVID scans,
        blue non-COVID, green the GAN's samples.
    """),
    code("""
        widget_server = server.show(out)
    """),
    md("""
        **How to read it.** Green dots spread over the real clouds mean the generator covers the variety
        of real scans; green dots packed into one corner, or onto one spot, mean it covers only part of
        it (or has collapsed). With the previous release (`best`, epoch 87) docs/WIDGET.md found the
        generated dots inside the dense middle of the COVID cloud, spreading less than the real scans: the generator
        covers the common appearance and misses the unusual slices, as its low Inception recall says
        (docs/RESULTS.md). Decoded images away from all dots are blurry averages: the decoder was never
        trained there.

        ## What to try next

        - Train the paper's 100 epochs (`python -m covgan_utils widget train`) and compare the errors
          with docs/WIDGET.md.
        - Put projected real scans and a patient's progression on the map:
          `python -m covgan_utils widget export --project 16 --progression A.png B.png` (docs/WIDGET.md,
          *Projected scans and progressions*; notebook 05 explains the projection).
        - Change the bottleneck (`autoencoder.get_config(latent_dim=...)`) to see how much of the error
          is the 2-D squeeze; the widget itself needs 2.
    """),
]

# ---------------------------------------------------------------- 04: evaluate

EVALUATE = [
    md("""
        # 04 · Evaluate a generator

        **Description:** score samples of a generator against held-out real scans, each number beside
        the floor of real scans and two bad generators.

        **Research use only; not a diagnostic tool.**

        ## Introduction

        The paper judges its samples by eye. A number is more useful, but only with a scale: this
        notebook puts every metric next to the **floor** (real training scans scored as if they were
        samples against the validation scans: the best any generator can do) and two **bad
        generators** (Gaussian noise, and one real image repeated: the signature of mode collapse). The
        metrics, all in `covgan_utils.metrics` (docs/EVALUATION.md):

        - **KID / FID** and **precision / recall / density / coverage** on Inception-v3 features (the
          headline; the `[fid]` extra, which `make demo` installs) with the project's domain encoder's
          beside them, labelled layout-only: docs/RESULTS.md (*Calibration*) shows that the domain
          encoder is blind to texture and resolution;
        - **SWD**, the sliced Wasserstein distance of image pyramids (ProGAN), per level;
        - **MS-SSIM diversity** within the set (real validation scans: 0.180);
        - **memorisation**: the nearest training image of every sample and the share of copies;
        - **blank** and **near-duplicate** fractions, the alarms for the paper's black images and for
          collapse.

        Smoke runs score 40 images per side on domain features only (seconds).
    """),
    SETUP_TEXT,
    md("""
        ## Choose the generator and the reference scans

        `runs.latest_run()` is the newest GAN run in `models/` (notebook 01's), or `None` for the
        released model. `report.real_split()` gives the COVID scans of the shared patient-level split:
        the validation side is the reference, the training side serves the memorisation test and the
        floor. The released generator was trained on that same training side, so its validation
        patients are unseen.
    """),
    code("""
        import tempfile
        import matplotlib.pyplot as plt
        from IPython.display import Image, Markdown, display
        from covgan_utils import plots, runs, sampling
        from covgan_utils.metrics import report

        N = 40 if SMOKE else 500  # images per side
        FEATURES = "domain" if SMOKE else "auto"  # auto: Inception when installed, domain beside it
        run_dir = runs.latest_run()
        train, val = report.real_split()
        print(f"run: {run_dir or 'released model'}; real train {len(train)} / validation {len(val)} COVID images")
        assert len(val) > 0 and set(train.patients).isdisjoint(val.patients)
    """),
    md("""
        ## Score

        `report.evaluate_images` samples nothing itself: it takes image arrays, so the same function
        scores a generator, a folder of images or the real scans. `python -m covgan_utils evaluate --run
        RUN --real DIR --train DIR --out report.json` does the same from PNG folders
        (`python -m covgan_utils metrics export-real DIR` writes them). Each side is cut to at most `N`
        images without replacement; the report records the sizes used. The report is written as JSON,
        into the run folder (or a temporary folder for the released model).
    """),
    code("""
        generated = sampling.generate(runs.load_generator(run_dir), range(N))
        out_dir = run_dir or pathlib.Path(tempfile.mkdtemp())
        result = report.evaluate_images(generated, val.images, train.images, n=N, features=FEATURES,
                                        ms_ssim_pairs=100 if SMOKE else 500, nearest_png=out_dir / "nearest-pairs.png")
        report.write_report(result, out_dir / "evaluation.json")
        display(Markdown(report.summary_table(result)))
    """),
    md("""
        **How to read it.** Read each row against its floor column, not on its own: KID, FID and SWD
        fall towards the floor as samples get closer to real; precision (samples that look real) and
        recall (real variety the samples cover) rise towards the floor's. The two bad columns show what
        failure looks like. **Noise** has KID far above everything and zero precision and recall.
        **One image repeated** has precision 1 (the image is real) but recall and coverage near 0,
        MS-SSIM 1 and duplicate fraction 1: that is mode collapse, and a generated column that looks
        like it has collapsed. A blank fraction above 0 is the paper's black images. A copy fraction
        well above 0.05 means the generator reproduces training scans: an unseen real scan is that close
        to a training scan only 5% of the time (docs/EVALUATION.md).

        For scale, on domain features docs/EVALUATION.md measured the floor at KID 0.0036, noise at
        28.4 and the repeated image at 0.424; on Inception features the released generator scores KID
        0.071 against the floor's 0.0071, and real scans rebuilt from 32x32 score 0.151 (docs/RESULTS.md).
        The assertions below check that the scale itself is sound: the floor below noise, the repeated
        image flagged as duplicates, every fraction within [0, 1]; outside smoke runs also that the
        generator makes no blank images and beats noise.
    """),
    code("""
        gen, base = result["generated"], result["baselines"]
        assert base["floor"]["kid"]["mean"] < base["noise"]["kid"]["mean"]
        assert base["repeat"]["duplicate_fraction"] == 1.0 and base["noise"]["prdc"]["precision"] == 0.0
        assert all(0.0 <= gen["prdc"][k] <= 1.0 for k in ("precision", "recall", "coverage"))
        assert 0.0 <= gen["ms_ssim"] <= 1.0 and (out_dir / "evaluation.json").is_file()
        assert SMOKE or (gen["blank_fraction"] == 0.0 and gen["kid"]["mean"] < base["noise"]["kid"]["mean"])
    """),
    md("""
        ## SWD by pyramid level

        SWD compares 7x7 neighbourhoods of Laplacian-pyramid levels: the 128 px level measures fine
        texture, the 16 px level the coarse layout of body and lungs.
    """),
    code("""
        columns = {"generated": gen, **{k: base[k] for k in ("floor", "noise", "repeat")}}
        fig, ax = plt.subplots(figsize=(5, 3))
        for name, col in columns.items():
            levels = col["swd"]["levels"]
            sizes = sorted(levels, key=int)  # 16, 32, 64, 128 px
            ax.plot(sizes, [levels[k] for k in sizes], marker="o", label=name)
        ax.set(xlabel="pyramid level (px)", ylabel="SWD x1e3")
        ax.legend();
    """),
    md("""
        **How to read it.** The floor line is the target at every level. A generated line close to the
        floor at 16-32 px but far above it at 128 px has the layout right and the texture wrong, which is
        where the CPU-trained models of docs/RESULTS.md stand (blur, grid patterns, missing vessels). A
        line above noise at the coarse levels means the layout itself is wrong.

        ## Metrics logged during training

        Runs with `metrics_every` set (`quick` every 10 epochs, `best` and `gpu` too; not `smoke`) log
        SWD, MS-SSIM, blank and duplicate fractions and KID to `metric-<name>.jsonl` and keep
        `checkpoint-best.npz` by KID.
    """),
    code("""
        if run_dir is not None and list(run_dir.glob("metric-*.jsonl")):
            plots.plot_metric_curves(run_dir)
        else:
            print("no metric-*.jsonl in this run (train with metrics_every > 0 to log them)")
    """),
    md("""
        **How to read it.** KID and SWD should fall over training; the dashed line marks the best
        epoch. MS-SSIM rising above the real value (0.180) late in training is the start of a collapse
        (docs/RESULTS.md saw it after epoch 80 of `quick`), which is why the best checkpoint is kept.

        ## The samples nearest to a training image

        The 8 samples closest to a training image in 32x32 pixels (top) and that training image (bottom).
    """),
    code("""
        assert pathlib.Path(result["nearest_pairs_png"]).is_file()
        display(Image(filename=result["nearest_pairs_png"]))
    """),
    md("""
        **How to read it.** Similar body shapes are expected; a pair that is the same scan down to its
        lesions and drawn marks is a copy. Many such pairs mean the generator memorised part of its
        training set, which is most likely with few images and long training.

        ## What to try next

        - Calibrate the scale: `python -m covgan_utils calibrate --features inception --n 112 --out
          cal.json` scores real scans degraded by noise, blur and lower resolution (docs/RESULTS.md,
          *Calibration*).
        - Test downstream use: `python -m covgan_utils evaluate ... --downstream` trains a COVID vs
          non-COVID classifier with and without the samples; so far the samples do not help
          (docs/RESULTS.md, *Downstream utility*).
        - Compare runs of one ablation with `python -m covgan_utils ablation evaluate` and `ablation
          report`, which use this same function.
    """),
]

# ---------------------------------------------------------------- 05: progression

PROGRESSION = [
    md("""
        # 05 · Progression between real scans

        **Description:** project real CT slices into the generator (GAN inversion), walk between a
        patient's first and last real scans, and walk a non-COVID scan along the disease direction with
        a COVID classifier watching.

        **Research use only; not a diagnostic tool.** Nothing here predicts how a patient's disease
        will develop.

        ## Introduction

        The paper's progression strips walk between two random noise vectors (notebook 02), so neither
        end is a patient. Here both ends are real scans. That needs the inverse of the generator: for a
        scan, the latent whose image is closest to it. `inversion.projection` finds it by optimisation
        from seeded starts (pixel L1 + MS-SSIM + a domain-encoder feature distance, all offline);
        `inversion.inversion_encoder` adds a network trained to guess it in one pass, in the manner of
        f-AnoGAN. docs/PROGRESSION.md holds the measured results on the released generator; this
        notebook shows each step on a few scans. Smoke runs use 10 optimisation steps from 1 start
        instead of 300 from 4, so their projections are rough.
    """),
    SETUP_TEXT,
    md("""
        ## The generator and the scans it never saw

        `run_dir = None` is the released generator (`models/release/`), which ships its inversion
        encoder and COVID direction; put a run folder here to use another. `progression.covid_scans`
        gives the COVID training and validation scans of the model's own patient-level split, and the
        COVID class input for a conditional model.
    """),
    code("""
        import matplotlib.pyplot as plt
        import numpy as np
        from IPython.display import Markdown, display
        from covgan_utils import runs, sampling
        from covgan_utils.data import dataset, followup
        from covgan_utils.inversion import direction, inversion_encoder, projection
        from covgan_utils.studies import progression

        STEPS, STARTS = (10, 1) if SMOKE else (300, 4)  # optimisation steps and seeded starts per projection
        run_dir = None
        generator, cfg = runs.load_generator(run_dir), runs.model_config(run_dir)
        train_images, val, label = progression.covid_scans(cfg)
        assert len(val) >= 6 and val.shape[1:] == (128, 128, 1)
    """),
    md("""
        ## Project validation scans three ways

        Six validation scans, projected by each method of `inversion_encoder.METHODS`: `optimise`
        (seeded starts, then Adam on the latent), `encoder` (one pass of the trained encoder, cached
        beside the model as `inversion-encoder.npz`; trained on first use) and `encoder+optimise` (the
        encoder's guess as the only start). `python -m covgan_utils project --image a.png --method
        encoder+optimise --out DIR` runs the same. As a reference the cell also scores the nearest
        training image in pixels: a projection no better than that has not used the generator at all.
    """),
    code("""
        targets = val[:6]
        _, encoder = inversion_encoder.load_or_train(run_dir, generator)
        methods = {m: inversion_encoder.project_with(m, generator, targets, encoder, label, num_steps=STEPS, starts=STARTS)
                   for m in inversion_encoder.METHODS}
        methods["nearest training image"] = {"images": progression.nearest_training_images(targets, train_images)}
        for name, result in methods.items():
            scores = projection.reconstruction_scores(result["images"], targets)
            print(f"{name:>22}: PSNR {scores['psnr'].mean():.1f} dB, MS-SSIM {scores['ms_ssim'].mean():.3f}")
            assert result["images"].shape == targets.shape and np.isfinite(scores["psnr"]).all()
            assert SMOKE or name.startswith("nearest") or scores["ms_ssim"].mean() > 0.5
    """),
    md("""
        **How to read it.** Higher PSNR and MS-SSIM are closer. On 16 validation scans docs/PROGRESSION.md
        measured MS-SSIM 0.810 for optimisation, 0.623 for the encoder alone, 0.816 for the encoder then
        optimisation, and 0.477 for the nearest training image: the generator can draw scans of patients
        it never saw far better than anything it was trained on. The encoder alone is several hundred
        times faster than optimisation (0.04 s against 27 s per image there), which makes it the better
        start.
    """),
    code("""
        rows = np.concatenate([targets] + [r["images"] for r in methods.values()])
        plt.figure(figsize=(12, 11))
        plt.imshow(sampling.make_grid(rows, cols=6), cmap="gray")
        plt.title("validation scans (top); below: " + ", ".join(methods))
        plt.axis("off");
    """),
    md("""
        **How to read it.** Each column is one scan. A good projection keeps the body outline, the lung
        shapes and the larger lesions of the scan above it; fine texture and drawn marks are lost, since
        the generator cannot draw what it never learned. A row of near-identical images whatever the
        target means the projection is stuck at one latent (too few steps, or a collapsed generator);
        grey blurs mean the latent left the region the generator was trained on.

        ## Walk between a patient's first and last scans

        `followup.followups()` reads the metadata's free-text `Time` into days and lists the patients
        with three or more dated scans (five in this data; docs/PROGRESSION.md). The first and last
        scans are projected and `projection.progression` decodes the straight path between their
        latents: `python -m covgan_utils progress --from A --to B --steps 8 --out walk.gif` does the
        same. The real scans of the dates in between are the test.
    """),
    code("""
        patient = followup.followups()[0]
        days = [p["day"] for p in patient["points"]]
        scans = followup.read_scans([p["files"][0] for p in patient["points"]])  # one slice per date
        walk = projection.progression(generator, scans[0], scans[-1], steps=8, label=label, num_steps=STEPS, starts=STARTS)
        assert walk["frames"].shape == (8, 128, 128, 1) and np.allclose(walk["inputs"], scans[[0, -1]])
        fig, axes = plt.subplots(2, 1, figsize=(16, 5))
        axes[0].imshow(sampling.make_grid(np.concatenate([scans[:1], walk["frames"], scans[-1:]]), cols=10), cmap="gray")
        axes[0].set_title(f"{patient['patient']}: real day {days[0]:g} | the projected path | real day {days[-1]:g}")
        axes[1].imshow(sampling.make_grid(scans, cols=len(scans)), cmap="gray")
        axes[1].set_title(f"the real scans, days {', '.join(f'{d:g}' for d in days)} ({patient['anchor']})")
        for ax in axes:
            ax.axis("off")
    """),
    md("""
        **How to read it.** The path should morph smoothly from the first projection to the last. The
        question is whether the frame at an intermediate date's position resembles the real scan of
        that date better than simple alternatives. docs/PROGRESSION.md answers it on all five patients:
        on average the path point scores MS-SSIM 0.580 with the real intermediate scan, a pixel
        cross-fade of the two real ends 0.613 and the nearer real end 0.564. So the walk is **no closer
        than a cross-fade**: the generator's latent space does not encode the course of the disease.
        The slices of different dates are unregistered and may sit at different chest levels, so the
        real intermediate scan is a noisy target for every method alike.

        ## Walk a non-COVID scan along the disease direction

        `direction.disease_walk` projects one scan and moves its latent towards COVID: along the class
        embedding for a conditional model, otherwise along a linear boundary between the latents of
        COVID and non-COVID training scans (InterFaceGAN), fitted once and cached as
        `direction-covid.npz`. The domain encoder's COVID head reports P(COVID) of every frame.
        `python -m covgan_utils edit --image scan.png --direction covid --out edit.png` runs the same.
        The scan here is a non-COVID validation scan, from a patient neither network was trained on.
    """),
    code("""
        both = cfg.replace(classes=("CT_COVID", "CT_NonCOVID"), conditional=False)
        _, _, val_both, val_labels = dataset.training_split(both)
        scan = val_both[np.flatnonzero(val_labels == 1)[0]]  # an unseen non-COVID scan
        edit = direction.disease_walk(scan, run_dir, num_steps=STEPS, starts=STARTS)
        p_covid = direction.covid_probability(edit["frames"])
        print("P(COVID) along the walk:", p_covid.round(2), "| rises monotonically:", direction.rises_monotonically(p_covid))
        assert edit["frames"].shape == (7, 128, 128, 1) and ((0 <= p_covid) & (p_covid <= 1)).all()
        plt.figure(figsize=(14, 2.5))
        plt.imshow(sampling.make_grid(np.concatenate([scan[None], edit["frames"]]), cols=8), cmap="gray")
        plt.title(f"the real scan | its projection moved towards COVID, strength {edit['strengths'][0]:g} to {edit['strengths'][-1]:g}")
        plt.axis("off");
    """),
    md("""
        **How to read it.** The first frame after the real scan is its projection (strength 0); later
        frames are pushed further along the direction. If the direction captures the disease, lesion-like
        haze should appear in the lungs while the body stays the same, and P(COVID) should rise. A rising
        probability with no visible change in the lungs means the walk exploits the classifier rather than
        drawing disease; frames that lose the body shape mean the strength carried the latent outside the
        generator's range; a flat or falling probability means the boundary, fitted between latents of the
        two classes, does not carry what the classifier reads as COVID for this scan. With the released
        generator and this scan, the full settings (300 steps, 4 starts) give the last case: the lungs
        change little and P(COVID) falls, so this direction is not yet a disease model. The classifier is the small domain encoder (held-out AUC 0.813,
        docs/EVALUATION.md), so its probabilities are a rough guide, not a diagnosis.

        ## The follow-up table

        The full measurement, on every follow-up patient and with 300 steps from 4 starts, is written by
        `python -m covgan_utils progression report` into docs/PROGRESSION.md (minutes on a CPU). Here is
        its walking section as committed.
    """),
    code("""
        text = progression.DOC.read_text()
        assert "## Walking" in text
        display(Markdown(text[text.index("## Walking"):]))
    """),
    md("""
        ## What to try next

        - Rerun the report on your own run: `python -m covgan_utils progression report --run RUN`
          (it trains the run's inversion encoder on first use).
        - Walk with `--mode slerp`, or between two different patients, and compare with the table's
          "another patient" column.
        - Put the projections and a progression on the latent map of notebook 03:
          `python -m covgan_utils widget export --project 16 --progression A.png B.png`.
        - A generator with lower Inception KID (docs/RESULTS.md) should project closer; whether its walks
          then beat the cross-fade is the open question.
    """),
]

NOTEBOOKS = {
    "00_data.ipynb": DATA,
    "01_train.ipynb": TRAIN,
    "02_interpolate.ipynb": INTERPOLATE,
    "03_latent_widget.ipynb": WIDGET,
    "04_evaluate.ipynb": EVALUATE,
    "05_progression.ipynb": PROGRESSION,
}


def build(name):
    """The notebook `name` as an nbformat object: badge + title cell, the setup prose and cell, then its cells."""
    intro, setup_text, *rest = NOTEBOOKS[name]
    nb = nbformat.v4.new_notebook()
    cells = [("markdown", f"{badge(name)}\n\n{intro[1]}"), setup_text, ("code", setup_cell(name in WIDGET_NOTEBOOKS))] + rest
    nb.cells = [nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text) for kind, text in cells]
    for i, cell in enumerate(nb.cells):
        cell["id"] = str(i)  # stable ids, as nbstripout numbers them: rerunning the tool or `make strip` changes nothing
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main():
    for name in NOTEBOOKS:
        nbformat.write(build(name), ROOT / "notebooks" / name)


if __name__ == "__main__":
    main()
