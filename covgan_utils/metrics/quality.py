"""Sample-quality metric functions for generated CT slices and a registry of them by name.

Nothing here imports training: the divergence guard and the training-time metric callback use these
functions, and `metrics.report` builds the evaluation reports on top of them.

Images are float32 [N, 128, 128, 1] in [-1, 1] everywhere. Every metric function is registered in
`METRICS` (name -> function) with the fewest images a set may hold for it in `MIN_N` (checked by
`require` before any work), and documents the paper it follows:

- `swd`       multi-scale sliced Wasserstein distance (Karras et al. 2018, "Progressive Growing of GANs")
- `ms_ssim`   mean MS-SSIM of random pairs within one set (Odena et al. 2017; Wang et al. 2003)
- `kid`       kernel inception distance, unbiased MMD^2 with a cubic kernel (Binkowski et al. 2018)
- `fid`       Frechet distance between Gaussian fits of features (Heusel et al. 2017)
- `prdc`      precision / recall (Kynkaanniemi et al. 2019), density / coverage (Naeem et al. 2020)
- `memorisation`  nearest training image of each sample, copy test calibrated on held-out scans
- `blank_fraction`, `duplicate_fraction`  alarms for black images and mode collapse

KID, FID and PRDC are computed on features of the project's domain encoder (`covgan_utils.metrics.domain_encoder`,
trained on the real train split) or, with the `[fid]` extra installed, of the StyleGAN3 Inception-v3.
"""
import warnings

import numpy as np

METRICS = {}


MIN_N = {}  # name -> (fewest images a set may hold for the metric, why): checked before any work (`require`)


BLANK_STD = 0.02  # per-image std (in [-1, 1] units) under which a slice counts as near-constant


DUPLICATE_RMS = 0.02  # RMS difference at 32x32 under which two samples count as near-duplicates


def register(name, min_n=1, why="one image"):
    """Decorator: add a metric function to `METRICS` under `name`, needing at least `min_n` images per set."""

    def wrap(fn):
        METRICS[name] = fn
        MIN_N[name] = (min_n, why)
        return fn

    return wrap


def require(metric, set_name, count, fix="pass more images", minimum=None, why=None):
    """One-line ValueError when the `set_name` set holds fewer than `metric` needs (its `MIN_N` unless given)."""
    least = MIN_N[metric][0] if minimum is None else minimum
    if count < least:
        raise ValueError(f"the {set_name} set has {count} images; {metric} needs at least {least} ({why or MIN_N[metric][1]}); {fix}")


def strictest(metrics):
    """(name, min_n, why) of the metric among `metrics` that needs the most images per set."""
    name = max(metrics, key=lambda m: MIN_N[m][0])
    return (name, *MIN_N[name])


def as_images(images):
    """Validate/convert to float32 [N, H, W, 1] in [-1, 1]."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(f"expected images [N, H, W, 1], got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("empty image set")
    return images


def subsample_index(count, n, seed=0):
    """Sorted indices of at most `n` of `count` items, drawn without replacement."""
    return np.sort(np.random.RandomState(seed).permutation(count)[: min(n, count)])


def subsample(images, n, seed=0):
    """At most `n` images drawn without replacement (all of them when fewer)."""
    return images[subsample_index(len(images), n, seed)]


# ---------------------------------------------------------------- sliced Wasserstein distance

def laplacian_pyramid(images, levels=4):
    """[N, H, W, 1] -> list of [N, h, w] float32: Laplacian bands at H, H/2, ... and the coarsest Gaussian level."""
    import cv2

    current = [im[..., 0] for im in as_images(images)]
    bands = []
    for _ in range(levels - 1):
        smaller = [cv2.pyrDown(im) for im in current]  # 5x5 binomial blur, then decimate by 2
        bands.append(np.stack([im - cv2.pyrUp(s, dstsize=im.shape[::-1]) for im, s in zip(current, smaller)]))
        current = smaller
    bands.append(np.stack(current))
    return bands


def _descriptors(level, per_image, patch, rng):
    """Random patch x patch neighbourhoods of one pyramid level: [N * per_image, patch * patch]."""
    n, h, w = level.shape
    windows = np.lib.stride_tricks.sliding_window_view(level, (patch, patch), axis=(1, 2))  # [N, h-p+1, w-p+1, p, p]
    ys = rng.randint(0, h - patch + 1, size=(n, per_image))
    xs = rng.randint(0, w - patch + 1, size=(n, per_image))
    rows = np.repeat(np.arange(n), per_image)
    return windows[rows, ys.ravel(), xs.ravel()].reshape(n * per_image, patch * patch).astype(np.float32)


def _normalise(desc):
    """Per-channel normalisation over the descriptor set (one channel here: global mean and std)."""
    return (desc - desc.mean()) / max(float(desc.std()), 1e-8)


def sliced_wasserstein(a, b, directions=128, repeats=4, rng=None):
    """Mean over `repeats` x `directions` random unit directions of the 1-D Wasserstein-1 distance
    between the projections of descriptor sets `a` and `b` (same size; sorted projections, mean |diff|)."""
    rng = rng or np.random.RandomState(0)
    results = []
    for _ in range(repeats):
        dirs = rng.randn(a.shape[1], directions).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
        pa = np.sort(np.ascontiguousarray((a @ dirs).T), axis=1)  # [directions, M], sorted along contiguous rows
        pb = np.sort(np.ascontiguousarray((b @ dirs).T), axis=1)
        results.append(np.abs(pa - pb).mean())
    return float(np.mean(results))


@register("swd")
def swd(generated, real, per_image=128, patch=7, levels=4, directions=128, repeats=4, seed=0):
    """Multi-scale sliced Wasserstein distance, x1e3 (Karras et al. 2018, ICLR, Sec. 5 and App. D).

    Each image is decomposed into a Laplacian pyramid (128, 64, 32 and the 16x16 Gaussian level);
    from every level `per_image` random 7x7 neighbourhoods are taken per image, each set normalised by
    its own mean and std, and compared with 4 x 128 random projections. Both sets are cut to the same
    number of images. Returns {"levels": {res: value}, "mean": average over levels}; lower is better.
    """
    rng = np.random.RandomState(seed)
    n = min(len(generated), len(real))
    gen_pyr = laplacian_pyramid(subsample(as_images(generated), n, seed), levels)
    real_pyr = laplacian_pyramid(subsample(as_images(real), n, seed + 1), levels)
    per_level = {}
    for g, r in zip(gen_pyr, real_pyr):
        dg = _normalise(_descriptors(g, per_image, patch, rng))
        dr = _normalise(_descriptors(r, per_image, patch, rng))
        per_level[str(g.shape[1])] = 1e3 * sliced_wasserstein(dg, dr, directions, repeats, rng)
    return {"levels": per_level, "mean": float(np.mean(list(per_level.values())))}


# ---------------------------------------------------------------- MS-SSIM diversity

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales


def _gauss_1d(size, sigma):
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-0.5 * coords**2 / sigma**2)
    return g / g.sum()  # the 2-D window is the outer product of this with itself


def _blur_valid(x, kernel):
    """Separable Gaussian filter with 'valid' borders: [N, H, W] -> [N, H-k+1, W-k+1]."""
    x = np.lib.stride_tricks.sliding_window_view(x, len(kernel), axis=1) @ kernel  # [N, H-k+1, W]
    return np.lib.stride_tricks.sliding_window_view(x, len(kernel), axis=2) @ kernel  # [N, H-k+1, W-k+1]


def _ssim_and_cs(x, y, kernel, k1=0.01, k2=0.03):
    """Mean SSIM and mean contrast-structure term per pair, images in [0, 1]: ([N], [N])."""
    c1, c2 = k1**2, k2**2
    mu_x, mu_y = _blur_valid(x, kernel), _blur_valid(y, kernel)
    num0, den0 = 2.0 * mu_x * mu_y, mu_x**2 + mu_y**2
    luminance = (num0 + c1) / (den0 + c1)
    cs = (2.0 * _blur_valid(x * y, kernel) - num0 + c2) / (_blur_valid(x * x + y * y, kernel) - den0 + c2)
    return (luminance * cs).mean(axis=(1, 2)), cs.mean(axis=(1, 2))


def _ms_ssim_pairs(a, b, filter_size=7, sigma=1.5):
    """MS-SSIM of image pairs [N, H, W, 1] in [-1, 1] -> [N], in NumPy (the same numbers as
    `tf.image.ssim_multiscale(max_val=1, filter_size=7)`; 128 px and five scales leave 8 px at the
    coarsest scale, so the 11-tap default window cannot fit)."""
    x = (np.asarray(a, np.float64)[..., 0] + 1.0) / 2.0  # [N, H, W] in [0, 1]
    y = (np.asarray(b, np.float64)[..., 0] + 1.0) / 2.0
    kernel = _gauss_1d(filter_size, sigma)
    terms = []
    for scale in range(len(MS_SSIM_WEIGHTS)):
        if scale:  # 2x2 average pooling
            n, h, w = x.shape
            x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
            y = y[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        ssim, cs = _ssim_and_cs(x, y, kernel)
        terms.append(np.maximum(cs, 0.0))
    terms[-1] = np.maximum(ssim, 0.0)  # luminance only at the coarsest scale
    return np.prod(np.stack(terms, axis=-1) ** np.array(MS_SSIM_WEIGHTS), axis=-1).astype(np.float32)


@register("ms_ssim", min_n=2, why="pairs of distinct images")
def ms_ssim(images, pairs=500, seed=0, batch=250):
    """Mean MS-SSIM over random pairs of distinct images of one set (Odena et al. 2017, "Conditional
    Image Synthesis with Auxiliary Classifier GANs"; MS-SSIM of Wang et al. 2003 with a 7-tap window).

    A diversity score: higher means more alike. Mode collapse shows as a generated value above the
    real set's. Returns {"mean", "std", "pairs"}.
    """
    images = as_images(images)
    n = len(images)
    require("ms_ssim", "image", n)
    rng = np.random.RandomState(seed)
    i = rng.randint(0, n, pairs)
    j = (i + rng.randint(1, n, pairs)) % n  # j != i
    values = np.concatenate([_ms_ssim_pairs(images[i[s:s + batch]], images[j[s:s + batch]]) for s in range(0, pairs, batch)])
    return {"mean": float(values.mean()), "std": float(values.std()), "pairs": int(pairs)}


# ---------------------------------------------------------------- feature-space distances

def _poly_kernel(x, y):
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x, y):
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean())


def _kid_subsets(x, y, size, subsets, rng):
    values = []
    for _ in range(subsets):
        xi = x[rng.choice(len(x), size, replace=False)]
        yi = y[rng.choice(len(y), size, replace=False)]
        values.append(_mmd2_unbiased(xi, yi))
    return np.array(values)


KID_MIN = 4  # the std of a whole-set KID comes from half-size subsets, and each needs two images


@register("kid", min_n=KID_MIN, why="its spread comes from half-size subsets of at least 2")
def kid(gen_features, real_features, subset_size=1000, subsets=100, seed=0):
    """Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs"): unbiased MMD^2
    with the kernel k(x, y) = (x.y / d + 1)^3, averaged over `subsets` random subsets of
    size m = min(n, subset_size) drawn without replacement from each side.

    When both sets hold no more than m features every subset is the whole set, the mean is the exact
    full-sample estimate and the subsets carry no spread; the std is then estimated from subsets of
    half that size divided by sqrt(2) (the estimator's variance falls at least as 1/m, so this is
    conservative). Returns {"mean", "std", "subset_size", "subsets"}; 0 means same distribution.
    """
    x = np.asarray(gen_features, np.float64)
    y = np.asarray(real_features, np.float64)
    require("kid", "generated", len(x))
    require("kid", "real", len(y))
    if subset_size < KID_MIN:
        raise ValueError(f"kid subset_size must be at least {KID_MIN}, got {subset_size}")
    rng = np.random.RandomState(seed)
    m = min(subset_size, len(x), len(y))
    values = _kid_subsets(x, y, m, subsets, rng)
    std = float(values.std())
    if m == len(x) == len(y) or std == 0.0:
        std = float(_kid_subsets(x, y, m // 2, subsets, rng).std() / np.sqrt(2.0))
    return {"mean": float(values.mean()), "std": std, "subset_size": int(m), "subsets": int(subsets)}


@register("fid", min_n=2, why="a covariance needs two rows")
def fid(gen_features, real_features):
    """Frechet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    Strongly biased upwards at small n (a few hundred samples), so it is reported with n and should
    only be compared at equal n and equal features. Returns {"value", "n_generated", "n_real"}.
    """
    x = np.asarray(gen_features, np.float64)
    y = np.asarray(real_features, np.float64)
    require("fid", "generated", len(x))
    require("fid", "real", len(y))
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # singular products (a collapsed set) are handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        covmean = _sqrtm(cov_x @ cov_y)
        if not np.isfinite(covmean).all():
            eps = 1e-6 * np.eye(len(cov_x))
            covmean = _sqrtm((cov_x + eps) @ (cov_y + eps))
    covmean = np.real(covmean)
    value = float(((mu_x - mu_y) ** 2).sum() + np.trace(cov_x) + np.trace(cov_y) - 2.0 * np.trace(covmean))
    return {"value": max(value, 0.0), "n_generated": len(x), "n_real": len(y)}


def _sqrtm(matrix):
    """Principal square root; SciPy before and after the removal of `sqrtm(..., disp=)` (1.17+)."""
    import scipy.linalg

    root = scipy.linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


def _pairwise(a, b):
    """Euclidean distances [len(a), len(b)]."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def _kth_radius(x, k):
    d = _pairwise(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


PRDC_K = 5  # nearest neighbours of the PRDC balls


def _prdc_why(k):
    return f"k={k} nearest neighbours + 1"


@register("prdc", min_n=PRDC_K + 1, why=_prdc_why(PRDC_K))
def prdc(gen_features, real_features, k=PRDC_K):
    """Precision and recall of Kynkaanniemi et al. 2019 and density and coverage of Naeem et al. 2020
    ("Reliable Fidelity and Diversity Metrics for Generative Models"), k-NN balls with k=5.

    precision: share of samples inside some real k-NN ball; recall: share of real images inside some
    sample k-NN ball; density: mean count of real balls holding a sample, / k; coverage: share of real
    balls holding at least one sample. All in [0, 1] (density can exceed 1); higher is better.
    """
    real = np.asarray(real_features, np.float64)
    gen = np.asarray(gen_features, np.float64)
    if k < 1:
        raise ValueError(f"prdc k must be at least 1, got {k}")
    for name, rows in (("generated", gen), ("real", real)):
        require("prdc", name, len(rows), minimum=k + 1, why=_prdc_why(k))
    r_real = _kth_radius(real, k)
    r_gen = _kth_radius(gen, k)
    d = _pairwise(real, gen)  # [n_real, n_gen]
    inside_real = d <= r_real[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= r_gen[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(gen))),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
        "k": int(k),
    }


# ---------------------------------------------------------------- memorisation and alarms

def thumbnails(images, size=32):
    """[N, H, W, 1] -> [N, size * size] area-downsampled pixels (for nearest-neighbour searches)."""
    import cv2

    images = as_images(images)
    return np.stack([cv2.resize(im[..., 0], (size, size), interpolation=cv2.INTER_AREA) for im in images]).reshape(len(images), -1)


@register("blank_fraction")
def blank_fraction(images, threshold=BLANK_STD):
    """Share of near-constant images (per-image std below `threshold`): the black/flat slices that a
    collapsed generator emits."""
    images = as_images(images)
    return float((images.reshape(len(images), -1).std(axis=1) < threshold).mean())


@register("duplicate_fraction")
def duplicate_fraction(images, threshold=DUPLICATE_RMS):
    """Share of images whose nearest other image of the same set differs by less than `threshold`
    RMS at 32x32: near-duplicates, the plainest sign of mode collapse."""
    thumbs = thumbnails(images)
    if len(thumbs) < 2:
        return 0.0
    d = _pairwise(thumbs, thumbs) / np.sqrt(thumbs.shape[1])
    np.fill_diagonal(d, np.inf)
    return float((d.min(axis=1) < threshold).mean())


# ---------------------------------------------------------------- augmentation leaks (ADA, Karras et al. 2020)

ORIENTATION_STATS = ("angle", "elongation", "area", "centroid_x", "centroid_y", "asymmetry")


BODY_THRESHOLD = -0.5  # pixels above this value (in [-1, 1]; air is near -1) count as body


def _body_moments(images, threshold):
    """orientation_stats for one chunk [n, H, W] -> [n, 6] (float64)."""
    n, h, w = images.shape
    x = np.arange(w) - (w - 1) / 2.0  # [W] right of the image centre, pixels
    y = (h - 1) / 2.0 - np.arange(h)  # [H] above the image centre, pixels
    mask = (images > threshold).astype(np.float64)  # [n, H, W]
    cols, rows = mask.sum(axis=1), mask.sum(axis=2)  # [n, W], [n, H] profiles
    area = cols.sum(axis=1)  # [n]
    mx, my = cols @ x / area, rows @ y / area  # [n] centroid, pixels
    mu20 = (cols * (x[None] - mx[:, None]) ** 2).sum(axis=1) / area
    mu02 = (rows * (y[None] - my[:, None]) ** 2).sum(axis=1) / area
    mu11 = np.einsum("nhw,h,w->n", mask, y, x) / area - mx * my
    half_diff, mean = (mu20 - mu02) / 2.0, (mu20 + mu02) / 2.0
    root = np.sqrt(half_diff ** 2 + mu11 ** 2)
    weight = (mask * np.clip((images + 1.0) / 2.0, 0.0, None)).sum(axis=1)  # [n, W] body brightness per column
    side = (weight * np.sign(x[None] - mx[:, None])).sum(axis=1) / weight.sum(axis=1)  # [n] right minus left share
    return np.stack([0.5 * np.degrees(np.arctan2(2.0 * mu11, mu20 - mu02)), np.sqrt((mean + root) / (mean - root)),
                     area / (h * w), mx / w, my / h, side], axis=1)


def orientation_stats(images, threshold=BODY_THRESHOLD, chunk=256):
    """Per-image orientation and scale features [N, 6], columns named by ORIENTATION_STATS.

    The body is the set of pixels above `threshold`. Columns:
    - angle: principal axis of the body from its second-order central moments, degrees in (-90, 90],
      counterclockwise as displayed (0 = widest along the rows; meaningless for round bodies)
    - elongation: sqrt(lambda_max / lambda_min) of the moment matrix, the axis ratio (1 = round)
    - area: body fraction of the image (scales as the square of a zoom)
    - centroid_x, centroid_y: body centroid offset from the image centre, fractions of the width /
      height, x right, y up
    - asymmetry: share of the body's brightness right of its centroid minus the share left of it,
      in [-1, 1] (0 = balanced); its sign flips under a mirror
    Blank images (no body pixel) have area 0 and NaN in every other column.
    """
    images = as_images(images)[..., 0].astype(np.float64)  # [N, H, W]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.concatenate([_body_moments(images[s:s + chunk], threshold) for s in range(0, len(images), chunk)])


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic of 1-d samples (NaNs dropped): the largest gap between
    their empirical CDFs, 0 for identical samples, 1 for disjoint ones; NaN when either is empty."""
    a, b = np.sort(np.asarray(a, np.float64).ravel()), np.sort(np.asarray(b, np.float64).ravel())
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(gap).max())


def leak_report(generated, real, threshold=BODY_THRESHOLD):
    """Compare the orientation/scale statistics of two image sets (ADA's augmentation-leak check).

    Returns {stat: {"generated_mean", "generated_std", "real_mean", "real_std", "ks", "ks_95"}} for
    each name in ORIENTATION_STATS. How to read it: "ks" is the two-sample Kolmogorov-Smirnov
    statistic (0 = same distribution, 1 = disjoint); "ks_95" is its 5% critical value
    1.36 sqrt((n + m) / (n m)), so ks above ks_95 means the sets differ in that statistic beyond
    sampling noise. A leak of the discriminator's augmentations into the generator shows as a wider
    angle spread (rotate), a wider elongation spread (aniso_scale), a wider area spread (iso_scale), a
    wider centroid spread (translations) or a mixed-sign asymmetry (xflip) in the generated set than
    in the real one. For scale, `leak_report(augment(real, policy, 1.0, seed), real)` shows a full leak.
    """
    gen, ref = orientation_stats(generated, threshold), orientation_stats(real, threshold)
    report = {}
    for k, name in enumerate(ORIENTATION_STATS):
        g, r = gen[:, k][np.isfinite(gen[:, k])], ref[:, k][np.isfinite(ref[:, k])]
        n, m = max(len(g), 1), max(len(r), 1)
        report[name] = {**_mean_std("generated", g), **_mean_std("real", r), "ks": ks_statistic(g, r),
                        "ks_95": float(1.36 * np.sqrt((n + m) / (n * m)))}
    return report


def _mean_std(prefix, values):
    """{prefix_mean, prefix_std} of 1-d values (NaN when empty)."""
    if len(values) == 0:
        return {f"{prefix}_mean": float("nan"), f"{prefix}_std": float("nan")}
    return {f"{prefix}_mean": float(np.mean(values)), f"{prefix}_std": float(np.std(values))}


def ms_ssim_paired(a, b, batch=250):
    """MS-SSIM of each pair (a[i], b[i]) of two image sets [N, 128, 128, 1] in [-1, 1] -> [N] (1 = identical)."""
    a, b = as_images(a), as_images(b)
    if len(a) != len(b):
        raise ValueError(f"paired MS-SSIM needs sets of one size, got {len(a)} and {len(b)}")
    return np.concatenate([_ms_ssim_pairs(a[s:s + batch], b[s:s + batch]) for s in range(0, len(a), batch)])
