"""The latent-space widget: the dense 2-D autoencoder (`autoencoder`), the points.json format (`schema`), its TF.js export with the latent map (`export`), and the local server (`server`)."""
