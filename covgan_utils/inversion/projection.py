"""Projection (GAN inversion): real 128x128 slices -> latents that the generator maps back to them.

Optimisation from several seeded starts, as StyleGAN2-ADA's projector does: Adam on the latent with a
learning-rate ramp (linear warm-up over the first 5% of the steps, cosine ramp-down over the last 25%)
and Gaussian noise added to the latent that fades out by 75% of the steps; every start runs a short
first leg and each image keeps its best start for the rest. The loss works offline: pixel L1 +
(1 - MS-SSIM) + distance in domain-encoder features (LPIPS backbones download at run time).

Latent spaces: the style family is projected into W+ (one w per modulated layer, `stylegan.num_ws`),
starting from the average w; its noise inputs stay at their constant maps (the sampling ones), so a
projection is a function of the latent alone. The other families are projected into z, starting from
seeded noise, with a prior term that keeps ||z||^2 near its expected value latent_dim (a latent far
outside the prior decodes almost anything: `latent_prior_report` says how far a projection went).
"""
import math
import pathlib
import time

import numpy as np
from keras import ops

from covgan_utils import sampling
from covgan_utils.data import decoding
from covgan_utils.metrics import domain_encoder, quality
from covgan_utils.nets import stylegan
from covgan_utils.util import backend, files

LOSS_WEIGHTS = {"l1": 1.0, "ms_ssim": 1.0, "features": 0.05, "prior": 0.01}


SSIM_SCALES = (0.0448, 0.2856, 0.3001)  # the first three MS-SSIM weights (Wang et al. 2003), renormalised below


def latent_space(generator):
    """"w+" for a style-based generator (it has a mapping network), else "z"."""
    return "w+" if any(layer.name == "mapping" for layer in generator.layers) else "z"


def decoder(generator, space, labels=None):
    """latents -> images [N, 128, 128, 1] (keras.ops, differentiable): z through the whole generator,
    W+ [N, num_ws, w_dim] through the synthesis network."""
    if space == "w+":
        synthesis = generator.get_layer("synthesis")
        return lambda w: synthesis(w, training=False)
    if space != "z":
        raise ValueError(f"unknown latent space {space!r}; choose 'z' or 'w+'")
    label_tensor = None if labels is None else ops.convert_to_tensor(labels)  # [N, 1]
    return lambda z: generator(backend.with_label(ops.convert_to_tensor(z), label_tensor), training=False)


def _gauss_kernel(size=7, sigma=1.5):
    g = np.exp(-0.5 * (np.arange(size) - (size - 1) / 2.0) ** 2 / sigma**2)
    g = np.outer(g, g) / np.outer(g, g).sum()
    return g.astype(np.float32)[:, :, None, None]  # [7, 7, 1, 1]


def ms_ssim_loss(x, y):
    """1 - three-scale MS-SSIM of image pairs in [-1, 1] (keras.ops), averaged over the batch."""
    kernel = ops.convert_to_tensor(_gauss_kernel())
    x, y = (x + 1.0) / 2.0, (y + 1.0) / 2.0  # [N, H, W, 1] in [0, 1]
    weights = np.array(SSIM_SCALES) / sum(SSIM_SCALES)
    total = 0.0
    for k, weight in enumerate(weights):
        if k:
            x, y = ops.average_pool(x, 2, 2), ops.average_pool(y, 2, 2)  # [N, H / 2**k, W / 2**k, 1]
        mu_x, mu_y = ops.conv(x, kernel), ops.conv(y, kernel)
        var_x = ops.conv(x * x, kernel) - mu_x**2
        var_y = ops.conv(y * y, kernel) - mu_y**2
        cov = ops.conv(x * y, kernel) - mu_x * mu_y
        cs = (2.0 * cov + 0.03**2) / (var_x + var_y + 0.03**2)
        term = cs if k < len(weights) - 1 else cs * (2.0 * mu_x * mu_y + 0.01**2) / (mu_x**2 + mu_y**2 + 0.01**2)
        total = total + weight * ops.mean(term, axis=(1, 2, 3))  # [N]
    return 1.0 - total  # [N]


def loss_fn(decode, space, features=None, weights=None):
    """(latents, targets [N, 128, 128, 1]) -> per-image loss [N] (keras.ops)."""
    w = {**LOSS_WEIGHTS, **(weights or {})}

    def per_image(latents, targets):
        images = decode(latents)  # [N, 128, 128, 1]
        loss = w["l1"] * ops.mean(ops.abs(images - targets), axis=(1, 2, 3)) + w["ms_ssim"] * ms_ssim_loss(images, targets)
        if features is not None and w["features"]:
            diff = features(images, training=False) - features(targets, training=False)  # [N, F]
            loss = loss + w["features"] * ops.mean(ops.square(diff), axis=1)
        if space == "z" and w["prior"]:
            loss = loss + w["prior"] * ops.square(ops.mean(ops.square(latents), axis=1) - 1.0)  # ||z||^2 / d near 1
        return loss  # [N]

    return per_image


_COMPILED = {}  # (generator, space, label, features, weights) -> (value_and_grad, per-image loss): one trace per batch shape
COMPILED_KEPT = 4  # the newest compiled losses kept: a long session projecting with many generators does not hold them all


def _compiled(generator, space, labels, label, feature_model, weights):
    key = (id(generator), space, label, None if labels is None else len(labels), id(feature_model), tuple(sorted((weights or {}).items())))
    if key not in _COMPILED or _COMPILED[key][0] is not generator:
        per_image = loss_fn(decoder(generator, space, labels), space, feature_model, weights)
        _COMPILED.pop(key, None)
        _COMPILED[key] = (generator, backend.value_and_grad(lambda x, t: ops.sum(per_image(x, t))), backend.jit_numpy(per_image))
        while len(_COMPILED) > COMPILED_KEPT:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest (dicts keep insertion order)
    return _COMPILED[key][1:]


def _learning_rate(t, base):
    """StyleGAN2 projector schedule: t in [0, 1] -> lr (warm-up 5%, cosine ramp-down over the last 25%)."""
    ramp = min(1.0, (1.0 - t) / 0.25)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / 0.05)


class _Adam:
    def __init__(self, shape):
        self.m, self.v, self.t = np.zeros(shape, np.float32), np.zeros(shape, np.float32), 0

    def step(self, x, grad, lr, beta_1=0.9, beta_2=0.999):
        self.t += 1
        self.m = beta_1 * self.m + (1 - beta_1) * grad
        self.v = beta_2 * self.v + (1 - beta_2) * grad**2
        m_hat, v_hat = self.m / (1 - beta_1**self.t), self.v / (1 - beta_2**self.t)
        return (x - lr * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)


def initial_latents(generator, space, n, start, seed, labels=None):
    """Start `start` of `n` images: seeded noise (z), or the w of that noise pulled halfway to the average w (W+)."""
    z = sampling.noise_for_seeds([seed * 1_000_003 + start * 10_007 + i for i in range(n)], sampling.latent_dim_of(generator))  # [n, latent]
    if space == "z":
        return z
    mapping = generator.get_layer("mapping")
    w = np.asarray(mapping(backend.with_label(z, labels), training=False))  # [n, w_dim]
    w_avg = stylegan.w_average(generator, labels=None if labels is None else int(labels[0, 0]))  # [w_dim]
    w = w_avg + (0.0 if start == 0 else 0.5) * (w - w_avg)  # start 0: the average w itself
    return np.repeat(w[:, None, :], stylegan.num_ws(generator), axis=1).astype(np.float32)  # [n, num_ws, w_dim]


def project(generator, targets, num_steps=300, starts=4, seed=0, lr=0.05, noise=0.05, label=None, features="domain", weights=None, progress=False, init=None):
    """Project real images [N, 128, 128, 1] in [-1, 1] -> {"latents", "images", "loss", "space", "seconds"}.

    `starts` seeded starts each run a first leg of num_steps // 5 steps; every image continues from its
    best. `init`: latents [N, ...] to use as the first start (an encoder's guess, `inversion.encode`).
    `features="domain"` adds the domain-encoder feature distance (None: pixels and MS-SSIM only).
    `label`: class index for conditional generators. Deterministic for a given seed."""
    targets = np.asarray(targets, np.float32)
    if targets.ndim != 4 or targets.shape[1:] != (128, 128, 1):
        raise ValueError(f"projection takes images [N, 128, 128, 1] in [-1, 1], got shape {targets.shape}")
    if num_steps < 5 or starts < 1:
        raise ValueError(f"num_steps must be >= 5 and starts >= 1, got {num_steps} and {starts}")
    began = time.time()
    n, space = len(targets), latent_space(generator)
    labels = sampling.labels_for(generator, n, label)
    feature_model = domain_encoder.load_encoder() if features == "domain" else None
    grad_fn, loss_of = _compiled(generator, space, labels, label, feature_model, weights)
    grad = lambda x: grad_fn(x, targets)  # noqa: E731
    evaluate = lambda x: loss_of(x, targets)  # noqa: E731
    rng = np.random.RandomState(seed)
    first_leg = max(1, num_steps // 5)
    begins = [initial_latents(generator, space, n, s, seed, labels) for s in range(starts)]
    if init is not None:
        begins[0] = _checked_init(init, begins[0].shape)
    runs = [_optimise(grad, begin, 0, first_leg, num_steps, lr, noise, rng, progress and s == 0) for s, begin in enumerate(begins)]
    losses = np.stack([evaluate(latent) for latent, _ in runs])  # [starts, N]
    best = losses.argmin(axis=0)  # [N]
    latents = np.stack([runs[best[i]][0][i] for i in range(n)])
    optimiser = _Adam(latents.shape)  # the second leg starts with fresh moments
    latents, _ = _optimise(grad, latents, first_leg, num_steps, num_steps, lr, noise, rng, progress, optimiser)
    decoded = np.clip(np.asarray(decoder(generator, space, labels)(latents)), -1.0, 1.0)
    return {"latents": latents, "images": decoded, "loss": evaluate(latents), "space": space, "seconds": time.time() - began, "starts_chosen": best}


def _checked_init(init, shape):
    init = np.asarray(init, np.float32)
    if init.shape != shape:
        raise ValueError(f"initial latents have shape {init.shape}, this generator and batch need {shape}")
    return init


def _optimise(grad, latents, begin, end, total, lr, noise, rng, progress, optimiser=None):
    """Adam steps begin..end (of `total`) from `latents`; returns (latents, optimiser)."""
    optimiser = optimiser or _Adam(latents.shape)
    scale = float(np.std(latents)) or 1.0
    bar = None
    if progress:
        import tqdm.auto

        bar = tqdm.auto.tqdm(total=end - begin, desc="project", unit="step")
    for step in range(begin, end):
        t = step / total
        jitter = (scale * noise * max(0.0, 1.0 - t / 0.75) ** 2 * rng.randn(*latents.shape)).astype(np.float32)
        _, g = grad(latents + jitter)
        latents = optimiser.step(latents, g, _learning_rate(t, lr))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return latents, optimiser


def latent_prior_report(latents, space, generator=None):
    """How far projected latents sit from the prior: z as ||z|| against the prior's sqrt(d) (+- its spread);
    W+ as the distance to the average w in units of the mapping's own spread."""
    latents = np.asarray(latents, np.float32)
    if space == "z":
        d = latents.shape[1]
        norms = np.linalg.norm(latents, axis=1)
        prior = np.linalg.norm(np.random.RandomState(0).randn(10_000, d), axis=1)
        return {"norm_mean": float(norms.mean()), "norm_max": float(norms.max()), "prior_norm_mean": float(prior.mean()),
                "prior_norm_p99": float(np.percentile(prior, 99)), "outside_p99": float((norms > np.percentile(prior, 99)).mean())}
    z = sampling.noise_for_seeds(range(50_000, 52_048), sampling.latent_dim_of(generator))
    w = np.asarray(generator.get_layer("mapping")(backend.with_label(z, sampling.labels_for(generator, len(z))), training=False))  # [2048, w_dim]
    w_avg, spread = w.mean(axis=0), np.linalg.norm(w - w.mean(axis=0), axis=1)
    dist = np.linalg.norm(latents - w_avg[None, None], axis=2).mean(axis=1)  # [N] mean over the ws
    return {"distance_mean": float(dist.mean()), "distance_max": float(dist.max()), "prior_distance_mean": float(spread.mean()),
            "prior_distance_p99": float(np.percentile(spread, 99)), "outside_p99": float((dist > np.percentile(spread, 99)).mean())}


def reconstruction_scores(reconstructions, targets, features=None):
    """PSNR (dB, images in [-1, 1] as [0, 1]), paired MS-SSIM and, with a feature model, the feature distance, per image."""
    r, t = np.asarray(reconstructions, np.float32), np.asarray(targets, np.float32)
    mse = np.mean(((r - t) / 2.0) ** 2, axis=(1, 2, 3))
    out = {"psnr": 10.0 * np.log10(1.0 / np.maximum(mse, 1e-12)), "ms_ssim": quality.ms_ssim_paired(r, t)}
    if features is not None:
        out["feature_distance"] = np.linalg.norm(domain_encoder.embed(features, r) - domain_encoder.embed(features, t), axis=1)
    return out


# ---------------------------------------------------------------- files and real-to-real progression

def read_images(files):
    """Scan files (PNG/JPEG, any size) -> [N, 128, 128, 1] in [-1, 1], preprocessed as the training data;
    an unreadable file raises a one-line ValueError naming it."""
    out = []
    for file in map(pathlib.Path, files):
        if not file.is_file():
            raise ValueError(f"{file}: no such image file; pass PNG or JPEG scans")
        image, reason = decoding.check_image(file.read_bytes())
        if image is None:
            raise ValueError(f"{file}: cannot be read as a scan ({reason}); pass PNG or JPEG scans")
        out.append(image)
    return np.stack(out)[..., None]  # [N, 128, 128, 1]


def file_stems(files):
    """Output names of input scans: their file name stems, which must differ (one-line ValueError otherwise)."""
    stems = [pathlib.Path(f).stem for f in files]
    if len(set(stems)) != len(stems):
        raise ValueError(f"two inputs share a file name stem ({', '.join(sorted({s for s in stems if stems.count(s) > 1}))}): their outputs would overwrite each other; rename one")
    return stems


def write_projection(result, stems, out_dir):
    """Write `out_dir/<stem>.png` (each reconstruction) and `out_dir/latents.npz` (latents by file stem,
    the latent space, the loss per image when known)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, image in zip(stems, result["images"]):
        sampling.save_png(image, out_dir / f"{stem}.png")
    loss = result.get("loss")
    arrays = {"stems": np.array(stems), "latents": result["latents"], "space": np.array(result["space"]),
              "loss": np.full(len(stems), np.nan, np.float32) if loss is None else loss}
    files.write_atomic(out_dir / "latents.npz", lambda fh: np.savez(fh, **arrays))
    return out_dir


def project_files(generator, files, out_dir, **kwargs):
    """Project scan files by optimisation: writes `out_dir/<stem>.png` and `out_dir/latents.npz`
    (`write_projection`); returns the projection dict."""
    stems = file_stems(files)
    result = project(generator, read_images(files), **kwargs)
    write_projection(result, stems, out_dir)
    return result


def walk(latent_a, latent_b, steps, mode="linear"):
    """Path between two projected latents, endpoints included: [steps, ...] (slerp per w row in W+)."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    if mode not in ("linear", "slerp"):
        raise ValueError(f"unknown mode {mode!r}; choose 'linear' or 'slerp'")
    a, b = np.asarray(latent_a, np.float32), np.asarray(latent_b, np.float32)
    flat_a, flat_b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])  # [rows, d]
    path = sampling.lerp if mode == "linear" else sampling.slerp
    rows = [path(ra, rb, steps) for ra, rb in zip(flat_a, flat_b)]  # each [steps, d]
    return np.stack(rows, axis=1).reshape((steps,) + a.shape)  # [steps, ...]


def progression(generator, image_a, image_b, steps=8, mode="linear", label=None, **kwargs):
    """Real-to-real progression: project two scans, walk between their latents, decode ->
    {"frames" [steps, 128, 128, 1] (first and last: the projections), "inputs" [2, ...], "projection"}."""
    inputs = np.stack([image_a, image_b]).astype(np.float32)  # [2, 128, 128, 1]
    result = project(generator, inputs, label=label, **kwargs)
    latents = walk(result["latents"][0], result["latents"][1], steps, mode)
    labels = sampling.labels_for(generator, steps, label)
    frames = np.clip(np.asarray(decoder(generator, result["space"], labels)(latents)), -1.0, 1.0)
    return {"frames": frames, "inputs": inputs, "projection": result}


def save_progression(result, out):
    """A progression with the real inputs beside it: a .png strip (real A, path..., real B), or a .gif
    whose every frame shows real A | the path's frame | real B."""
    inputs, frames = result["inputs"], result["frames"]
    if pathlib.Path(out).suffix.lower() == ".gif":
        wide = np.concatenate([np.repeat(inputs[:1], len(frames), 0), frames, np.repeat(inputs[1:], len(frames), 0)], axis=2)  # [K, 128, 384, 1]
        sampling.save_strip(wide, out)
    else:
        sampling.save_strip(np.concatenate([inputs[:1], frames, inputs[1:]]), out)
    return out
