"""A disease direction in the generator's latent space (InterFaceGAN, Shen et al. 2020): a linear boundary
between projected COVID and non-COVID training scans; its unit normal points towards COVID. With the
model's trained inversion encoder (`inversion`), every training scan of both classes is projected in one
pass, so the boundary is fitted on about a thousand latents rather than a few dozen optimised ones, and
its accuracy is measured by cross-validation. Walking a
projected scan along it (`edit`) makes it more or less COVID-like; the encoder's COVID head
(`encoder.load_classifier`, trained on real scans only) checks that its probability rises along the walk.

Works in the latent space of projection (z, or W+ for the style family). For a conditional generator
projected in z (lean and FastGAN-style families) the class input itself is the direction: `class_walk`
projects a scan with its class and decodes the same latent while the class embedding moves from the
source class to the target (`images.blended_class`; strength 1 is the target's embedding). A style-based
generator is projected into W+, after its mapping network has used the class: it keeps the boundary.
"""

import numpy as np

from covgan_utils import checkpoints, runs, sampling
from covgan_utils.data import dataset
from covgan_utils.inversion import inversion_encoder, projection
from covgan_utils.metrics import domain_encoder

FILE = "direction-covid.npz"


def fit_boundary(latents, is_covid, l2=1e-3, steps=2000, lr=0.5):
    """Logistic regression on flattened latents (NumPy, standardised features) ->
    {"normal": unit vector shaped like one latent, pointing to COVID, "accuracy": training accuracy}."""
    x = np.asarray(latents, np.float64).reshape(len(latents), -1)
    y = np.asarray(is_covid, np.float64)
    if len(np.unique(y)) != 2:
        raise ValueError("a boundary needs scans of both classes (COVID and non-COVID)")
    mean, std = x.mean(0), x.std(0) + 1e-8
    xs = (x - mean) / std
    w, b = np.zeros(xs.shape[1]), 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(xs @ w + b)))
        w -= lr * (xs.T @ (p - y) / len(y) + l2 * w)
        b -= lr * float(np.mean(p - y))
    normal = w / std  # back to latent units
    normal /= np.linalg.norm(normal)
    accuracy = float(np.mean(((xs @ w + b) > 0) == (y > 0.5)))
    return {"normal": normal.reshape(np.shape(latents)[1:]).astype(np.float32), "accuracy": accuracy}


def cross_validated_accuracy(latents, is_covid, folds=5, seed=0):
    """Mean held-out accuracy of `fit_boundary` over `folds` folds (the training accuracy of a boundary in
    100 or more dimensions says nothing when there are fewer scans than dimensions)."""
    x = np.asarray(latents, np.float64).reshape(len(latents), -1)
    y = np.asarray(is_covid, np.float64)
    order = np.random.RandomState(seed).permutation(len(y))
    scores = []
    for held in np.array_split(order, folds):
        kept = np.setdiff1d(order, held)
        normal = fit_boundary(x[kept], y[kept])["normal"].reshape(-1)
        proj = x @ normal
        cut = 0.5 * (proj[kept][y[kept] == 1].mean() + proj[kept][y[kept] == 0].mean())  # midway between the class means
        scores.append(np.mean((proj[held] > cut) == (y[held] > 0.5)))
    return float(np.mean(scores))


def fit_direction(generator, covid, non_covid, num_steps=150, starts=2, seed=0, inverter=None):
    """Project COVID and non-COVID scans [N, 128, 128, 1] (with the trained encoder `inverter` when given,
    else by optimisation) and fit the boundary -> direction dict (+ "space", "cv_accuracy", "projection")."""
    both = np.concatenate([covid, non_covid]).astype(np.float32)
    is_covid = np.r_[np.ones(len(covid)), np.zeros(len(non_covid))]
    if inverter is not None:
        latents, space, how = inversion_encoder.encode(inverter, both), inverter["space"], "encoder"
    else:
        result = projection.project(generator, both, num_steps=num_steps, starts=starts, seed=seed, progress=True)
        latents, space, how = result["latents"], result["space"], f"optimisation, {num_steps} steps"
    fit = fit_boundary(latents, is_covid)
    return {**fit, "cv_accuracy": cross_validated_accuracy(latents, is_covid, seed=seed), "space": space,
            "n_covid": len(covid), "n_non_covid": len(non_covid), "num_steps": num_steps, "projection": how}


def training_scans(config, n=24, seed=0, data_dir=None):
    """(COVID, non-COVID) train-split scans, `n` of each (None: all of them; the validation patients stay unseen)."""
    both = config.replace(classes=("CT_COVID", "CT_NonCOVID"), max_images=0)
    images, labels, _, _ = dataset.training_split(both, data_dir)
    rng = np.random.RandomState(seed)
    pick = [rng.permutation(np.flatnonzero(labels == k))[:n] for k in (0, 1)]
    return images[pick[0]], images[pick[1]]


def load_or_fit(run=None, n=24, num_steps=150, seed=0, data_dir=None):
    """(generator, COVID direction) of a model; the direction is cached as `direction-covid.npz` beside its
    config (run folder or release) and refitted when the weights it was fitted on have changed. When the
    model has a cached inversion encoder (`inversion_encoder.load_or_train`), every training scan of both classes
    is encoded; otherwise `n` scans of each class are projected by optimisation."""
    folder = runs.resolve_run(run)
    file = folder / FILE
    generator = runs.load_generator(run)
    digest = checkpoints.weights_digest(generator)  # a cached direction belongs to exactly these weights
    if file.is_file():
        with np.load(file) as z:
            if str(z["weights_sha256"]) == digest:
                return generator, {k: z[k] if k == "normal" else z[k].item() for k in z.files if k != "weights_sha256"}
    inverter = inversion_encoder.load(folder / inversion_encoder.FILE, digest)
    covid, non_covid = training_scans(runs.model_config(run), None if inverter else n, seed, data_dir)
    direction = fit_direction(generator, covid, non_covid, num_steps, seed=seed, inverter=inverter)
    np.savez(file, **{k: np.asarray(v) for k, v in direction.items()}, weights_sha256=np.array(digest))
    return generator, direction


def edit(generator, image, direction, strengths, label=None, **kwargs):
    """Project one scan and decode it moved by each strength along the direction ->
    {"frames" [K, 128, 128, 1], "strengths", "projection"}."""
    result = projection.project(generator, np.asarray(image, np.float32)[None], label=label, **kwargs)
    if result["space"] != direction["space"]:
        raise ValueError(f"the direction was fitted in {direction['space']} but this generator projects into {result['space']}; refit it")
    strengths = np.asarray(strengths, np.float32)
    latents = result["latents"][0][None] + strengths.reshape((-1,) + (1,) * direction["normal"].ndim) * direction["normal"][None]
    decode = projection.decoder(generator, result["space"], sampling.labels_for(generator, len(strengths), label))
    frames = np.clip(np.asarray(decode(latents)), -1.0, 1.0)
    return {"frames": frames, "strengths": strengths, "projection": result}


def class_walk(generator, image, strengths, source, target, **kwargs):
    """Project one scan with class input `source`, then decode its latent with the class embedding moved
    towards `target` by each strength (the noise fixed) -> {"frames" [K, 128, 128, 1], "strengths", "projection"}."""
    result = projection.project(generator, np.asarray(image, np.float32)[None], label=source, **kwargs)
    if result["space"] != "z":
        raise ValueError("class interpolation walks z-space projections; a style-based generator is projected into W+ (use the boundary)")
    decode = projection.decoder(generator, "z", sampling.labels_for(generator, 1, source))
    frames = []
    for s in strengths:
        with sampling.blended_class(generator, source, target, float(s)):
            frames.append(np.asarray(decode(result["latents"])))  # [1, 128, 128, 1]
    return {"frames": np.clip(np.concatenate(frames), -1.0, 1.0), "strengths": np.asarray(strengths, np.float32), "projection": result}


def walks_class(generator):
    """Whether `edit` walks the class embedding (a conditional generator projected in z) rather than a boundary."""
    return sampling.is_conditional(generator) and projection.latent_space(generator) == "z"


def covid_probability(images, classifier=None):
    """P(COVID) [N] of the encoder's COVID head."""
    classifier = classifier or domain_encoder.load_classifier()
    return np.asarray(classifier(np.asarray(images, np.float32), training=False))[:, 0]


def rises_monotonically(values, tolerance=0.02):
    """Whether a sequence never falls by more than `tolerance` from one step to the next (the classifier's
    wobble near 0 and 1: 2 points of probability by default) and ends higher than it starts."""
    v = np.asarray(values, np.float64)
    return bool(len(v) >= 2 and np.all(np.diff(v) >= -tolerance) and v[-1] > v[0])


def disease_walk(image, run=None, strength=None, steps=7, **kwargs):
    """Walk one scan towards COVID with a model (run folder, None: the release), in `steps` frames from
    strength 0 to `strength`: along the class embedding for a conditional z-space model (default strength
    1: the COVID embedding), else along the fitted boundary (default 6, latent units; fitted and cached on
    first use) -> the walk dict of `class_walk` / `edit`."""
    generator = runs.load_generator(run)
    if walks_class(generator):
        config = runs.model_config(run)
        strengths = np.linspace(0.0, 1.0 if strength is None else strength, steps)
        return class_walk(generator, image, strengths, sampling.class_label(config, "non-covid"), sampling.class_label(config, "covid"), **kwargs)
    generator, direction = load_or_fit(run)
    return edit(generator, image, direction, np.linspace(0.0, 6.0 if strength is None else strength, steps), **kwargs)
