"""Progression measured against real scans: how well the generator reconstructs validation scans it never
saw, and whether walking between a patient's first and last projected scans passes near the real
intermediate scan. `write_report` writes both tables into docs/PROGRESSION.md
(`python -m covgan_utils progression report`).

Follow-ups (`covgan_utils.data.followup`): every patient with three or more dated time points on one anchor.
For each intermediate time point at fraction f of the first-to-last interval: the path point
G(lerp(w_first, w_last, f)) against the real intermediate slices, beside baselines: the nearer real
endpoint, a pixel cross-fade (1 - f) A + f B of the real endpoints, another patient's scan, and as a
ceiling the projection of the intermediate scan itself. A time point often holds several slices at
different chest levels, so every candidate is scored against its best-matching intermediate slice.
Slices from different dates are unregistered and may sit at different chest levels: a small gap to the
baselines says little either way.
"""
import pathlib
import time

import numpy as np

from covgan_utils import runs, sampling
from covgan_utils.data import dataset, followup
from covgan_utils.inversion import inversion_encoder, projection
from covgan_utils.metrics import domain_encoder, quality
from covgan_utils.util import hardware, paths
from covgan_utils.widget import autoencoder

DOC = paths.PROJECT_ROOT / "docs" / "PROGRESSION.md"


def _distances(candidates, references, features):
    """Best match of each candidate [K, ...] over the references [R, ...]: (MS-SSIM [K], feature distance [K])."""
    c_f, r_f = domain_encoder.embed(features, candidates), domain_encoder.embed(features, references)
    ssim = np.stack([quality.ms_ssim_paired(candidates, np.repeat(references[j:j + 1], len(candidates), 0)) for j in range(len(references))], 1)
    dist = np.linalg.norm(c_f[:, None, :] - r_f[None, :, :], axis=2)  # [K, R]
    return ssim.max(axis=1), dist.min(axis=1)


def nearest_training_images(targets, train_images):
    """The training image nearest to each target in pixels (full resolution L2) -> [N, 128, 128, 1]."""
    t = targets.reshape(len(targets), -1).astype(np.float64)
    r = train_images.reshape(len(train_images), -1).astype(np.float64)
    d = (t**2).sum(1)[:, None] - 2 * t @ r.T + (r**2).sum(1)[None]  # [N, M]
    return train_images[d.argmin(axis=1)]


def reconstruction_rows(generator, val, train_images, num_steps=300, starts=4, autoencoder_run=None, seed=0, inverter=None, label=None):
    """Rows of the reconstruction table on validation scans `val`: the projection by optimisation, by a
    trained encoder and by the encoder then optimisation (when `inverter` is given), the autoencoder (when a
    run is given) and the nearest training image -> (list of dicts, the optimisation's projection)."""
    features = domain_encoder.load_encoder()
    rows = []
    began = time.time()
    result = projection.project(generator, val, num_steps=num_steps, starts=starts, seed=seed, label=label, progress=True)
    rows.append(_projection_row(f"projection, optimisation ({result['space']}, {starts} starts x {num_steps} steps)", result, began, generator, val, features))
    if inverter is not None:
        rows += _encoder_rows(generator, inverter, val, num_steps, seed, label, features)
    if autoencoder_run is not None:
        ae_config, enc, dec = autoencoder.load_autoencoder(runs.resolve_run(autoencoder_run, kind="autoencoder"))
        began = time.time()
        recon = np.asarray(dec(enc(val)))
        rows.append({"method": f"dense autoencoder (`{ae_config.preset}` preset, {ae_config.epochs} epochs)", "seconds": (time.time() - began) / len(val),
                     **_summary(projection.reconstruction_scores(recon, val, features))})
    began = time.time()
    nearest = nearest_training_images(val, train_images)
    rows.append({"method": "nearest training image (pixels)", "seconds": (time.time() - began) / len(val),
                 **_summary(projection.reconstruction_scores(nearest, val, features))})
    return rows, result


def _projection_row(method, result, began, generator, val, features):
    prior = projection.latent_prior_report(result["latents"], result["space"], generator)
    return {"method": method, "seconds": (time.time() - began) / len(val), "prior": prior,
            **_summary(projection.reconstruction_scores(result["images"], val, features))}


def _encoder_rows(generator, inverter, val, num_steps, seed, label, features):
    """(b) the trained encoder alone, (c) its latents as the start of one optimisation run."""
    began = time.time()
    latents = inversion_encoder.encode(inverter, val)
    decode = projection.decoder(generator, inverter["space"], sampling.labels_for(generator, len(val), label))
    encoded = {"latents": latents, "images": np.clip(np.asarray(decode(latents)), -1.0, 1.0), "space": inverter["space"]}
    trained = f"{inverter['epochs']} epochs on {inverter['n_images']} training scans, {inverter['seconds'] / 60:.0f} min"
    rows = [_projection_row(f"trained encoder ({trained})", encoded, began, generator, val, features)]
    began = time.time()
    refined = projection.project(generator, val, num_steps=num_steps, starts=1, seed=seed, label=label, init=inversion_encoder.encode(inverter, val), progress=True)
    rows.append(_projection_row(f"trained encoder, then optimisation (1 start x {num_steps} steps)", refined, began, generator, val, features))
    return rows


def _summary(per_image):
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in per_image.items()}


def _patient_scans(data_dir, point):
    return followup.read_scans(point["files"], data_dir)


def followup_rows(generator, data_dir=None, num_steps=300, starts=4, seed=0, label=None):
    """One row per (patient, intermediate time point): MS-SSIM and feature distance of the path point and
    of each baseline to the real intermediate slices."""
    features = domain_encoder.load_encoder()
    patients = followup.followups(data_dir)
    scans = {p["patient"]: [_patient_scans(data_dir, point) for point in p["points"]] for p in patients}
    rows = []
    for p in patients:
        points, slices = p["points"], scans[p["patient"]]
        first, last = slices[0][:1], slices[-1][:1]  # the first slice of each end (file-name order)
        ends = projection.project(generator, np.concatenate([first, last]), num_steps=num_steps, starts=starts, seed=seed, label=label)
        others = np.concatenate([s[-1][:1] for q, s in scans.items() if q != p["patient"]])  # one scan of every other patient
        for k in range(1, len(points) - 1):
            f = followup.fraction(points[0]["day"], points[k]["day"], points[-1]["day"])
            real = slices[k]
            latent = (1.0 - f) * ends["latents"][0] + f * ends["latents"][1]  # the path's point at the intermediate day
            decode = projection.decoder(generator, ends["space"], sampling.labels_for(generator, 1, label))
            path_point = np.clip(np.asarray(decode(latent[None])), -1, 1)  # [1, 128, 128, 1]
            ceiling = projection.project(generator, real[:1], num_steps=num_steps, starts=starts, seed=seed, label=label)["images"]
            candidates = {
                "path point": path_point,
                "nearer real endpoint": first if f <= 0.5 else last,
                "pixel cross-fade": ((1 - f) * first + f * last).astype(np.float32),
                "projection of the intermediate (ceiling)": ceiling,
            }
            row = {"patient": p["patient"].split("/")[-1], "anchor": p["anchor"], "days": [pt["day"] for pt in points], "day": points[k]["day"], "fraction": f}
            for name, image in candidates.items():
                ssim, dist = _distances(image, real, features)
                row[name] = (float(ssim[0]), float(dist[0]))
            ssim, dist = _distances(others, real, features)
            row["another patient (mean)"] = (float(ssim.mean()), float(dist.mean()))
            rows.append(row)
    return rows


FOLLOWUP_COLUMNS = ("path point", "nearer real endpoint", "pixel cross-fade", "another patient (mean)", "projection of the intermediate (ceiling)")


def _fmt_days(days):
    return ", ".join(f"{d:g}" for d in days)


def markdown(recon_rows, follow_rows, n_val, model_name, unparsed, command="python -m covgan_utils progression report", machine=None):
    """The PROGRESSION.md text for the two tables."""
    lines = ["# Progression between real scans", "",
             f"Generator: {model_name}. Written by `{command}`; every number below comes from that command.", "",
             f"## Reconstruction of validation scans the generator never saw ({n_val} COVID validation slices)", "",
             "| method | PSNR dB | MS-SSIM | domain feature distance | s / image | latent vs prior |", "|---|---|---|---|---|---|"]
    for r in recon_rows:
        prior = r.get("prior")
        where = "n/a"
        if prior and "norm_mean" in prior:
            where = f"‖z‖ {prior['norm_mean']:.1f} (prior {prior['prior_norm_mean']:.1f}, p99 {prior['prior_norm_p99']:.1f}); {prior['outside_p99']:.0%} outside p99"
        elif prior:
            where = f"‖w - w̄‖ {prior['distance_mean']:.2f} (prior {prior['prior_distance_mean']:.2f}, p99 {prior['prior_distance_p99']:.2f}); {prior['outside_p99']:.0%} outside p99"
        cells = [f"{r[k][0]:.3f} ± {r[k][1]:.3f}" if k != "psnr" else f"{r[k][0]:.1f} ± {r[k][1]:.1f}" for k in ("psnr", "ms_ssim", "feature_distance")]
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['seconds']:.2f} | {where} |")
    timed = f" Seconds per image: wall clock on {machine}, batches of {n_val}." if machine else ""
    lines += ["", "PSNR and MS-SSIM: higher is closer; feature distance (domain encoder, lower is closer)." + timed, "",
              "## Walking between a patient's first and last scans", "",
              "Each cell: best MS-SSIM (higher is closer) / smallest domain feature distance (lower is closer) to the real intermediate slices.", "",
              "| patient | anchor | days | intermediate day (fraction) | " + " | ".join(FOLLOWUP_COLUMNS) + " |", "|" + "---|" * (4 + len(FOLLOWUP_COLUMNS))]
    for r in follow_rows:
        cells = [f"{r[c][0]:.3f} / {r[c][1]:.2f}" for c in FOLLOWUP_COLUMNS]
        lines.append(f"| {r['patient']} | {r['anchor']} | {_fmt_days(r['days'])} | {r['day']:g} ({r['fraction']:.2f}) | " + " | ".join(cells) + " |")
    if follow_rows:
        mean = {c: (np.mean([r[c][0] for r in follow_rows]), np.mean([r[c][1] for r in follow_rows])) for c in FOLLOWUP_COLUMNS}
        lines.append("| mean | | | | " + " | ".join(f"{mean[c][0]:.3f} / {mean[c][1]:.2f}" for c in FOLLOWUP_COLUMNS) + " |")
    lines += ["", "Slices from different dates are unregistered and may sit at different chest levels (and some are crops with drawn marks),",
              "so the real intermediate scan is a noisy target for every column alike.", "",
              "`Time` texts that give no usable time (listed, not guessed): " + (", ".join(f"\"{t}\" ({n} row{'s' if n != 1 else ''})" for t, n in unparsed) or "none") + "."]
    return "\n".join(lines) + "\n"


def covid_scans(config, data_dir=None):
    """(COVID training scans, COVID validation scans, COVID class index or None) of a model's config: a
    conditional model trains on both classes, and its COVID samples are compared with COVID scans."""
    train_images, train_labels, val, val_labels = dataset.training_split(config, data_dir)
    covid = list(config.classes).index("CT_COVID")
    return train_images[train_labels == covid], val[val_labels == covid], (covid if config.conditional else None)


def write_report(run=None, out=None, n_val=16, num_steps=300, starts=4, autoencoder_run=None, data_dir=None, seed=0, encoder_epochs=20):
    """Project validation scans and the follow-up patients with the generator of `run` (None: the release);
    write the markdown report to `out` (default docs/PROGRESSION.md). Returns the path.

    The trained encoder of rows (b) and (c) comes from `inversion_encoder.load_or_train` (cached beside the model);
    `encoder_epochs=0` leaves those rows out."""
    generator = runs.load_generator(run)
    train_images, val, label = covid_scans(runs.model_config(run), data_dir)
    val = val[np.random.RandomState(seed).permutation(len(val))[:n_val]]
    inverter = inversion_encoder.load_or_train(run, generator, encoder_epochs, seed, data_dir)[1] if encoder_epochs else None
    recon, _ = reconstruction_rows(generator, val, train_images, num_steps, starts, autoencoder_run, seed, inverter, label)
    follow = followup_rows(generator, data_dir, num_steps, starts, seed, label)
    out = pathlib.Path(out or DOC)
    name = f"run {pathlib.Path(run).name}" if run else "the released model (models/release)"
    command = "python -m covgan_utils progression report" + (f" --autoencoder {autoencoder_run}" if autoencoder_run else "")
    out.write_text(markdown(recon, follow, len(val), name, followup.unparsed(data_dir), command, hardware.hardware()))
    return out
