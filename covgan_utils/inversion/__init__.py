"""Real scans into the latent space: optimisation-based projection (`projection`), a trained inversion encoder (`inversion_encoder`), and the disease direction and its walks (`direction`)."""
