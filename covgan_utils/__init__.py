"""covgan: a GAN for 128x128 COVID-19 lung CT slices, its latent space, and a browser widget to explore it.

Subpackages by job, lowest layer first (each imports only from the layers below; tests/test_layering.py):
util (paths, atomic files, console, hardware, per-backend compilation), config (the recipe and presets),
data (scans, split, follow-ups), nets (network families), checkpoints, sampling (the image of a seed),
runs (run folders and the release), metrics (quality metrics, feature networks, reports), training
(losses, augmentation, per-backend step, GAN, callbacks, loop), inversion (projection, inversion encoder,
disease direction), plots, widget (autoencoder, TF.js export, server), studies (ablation, GPU job,
progression report), cli (the command line).
"""
