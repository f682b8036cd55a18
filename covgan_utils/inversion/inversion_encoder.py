"""A trained encoder for GAN inversion (f-AnoGAN's izi_f, Schlegl et al. 2019): real scan -> latent in one pass.

The generator stays frozen; a convolutional encoder E learns, on the generator's own training scans,
  * image -> latent -> image: G(E(x)) close to x in pixel L1 + (1 - MS-SSIM) + domain-encoder features
    (the projection loss of `projection.loss_fn`; f-AnoGAN uses discriminator features, but a released model
    ships only its generator, and the domain encoder works offline for every family), and
  * latent -> image -> latent: E(G(z)) close to z for fresh prior draws (w repeated over W+ for the style
    family), which keeps E's answers inside the prior where the generator is trained.
`encode` is the method (b) of the progression report; `projection.project(..., init=encode(...))` is (c),
encoder then optimisation. The trained encoder is cached beside the model (`inversion-encoder.npz`),
keyed by the generator's weights, as the disease direction is.
"""
import pathlib
import time

import keras
import numpy as np
from keras import ops

from covgan_utils import checkpoints, runs, sampling
from covgan_utils.data import dataset
from covgan_utils.inversion import projection
from covgan_utils.metrics import domain_encoder
from covgan_utils.nets import stylegan
from covgan_utils.util import backend

FILE = "inversion-encoder.npz"


WIDTHS = (32, 64, 128, 128, 128)


ZIZ_WEIGHT = 1.0  # weight of the latent -> image -> latent term


def latent_shape(generator):
    """Shape of one latent of projection: (latent_dim,) for z, (num_ws, w_dim) for W+."""
    if projection.latent_space(generator) == "z":
        return (sampling.latent_dim_of(generator),)
    return (stylegan.num_ws(generator), int(generator.get_layer("mapping").output.shape[-1]))


def build_encoder(shape, widths=WIDTHS, name="inversion_encoder"):
    """Image [N, 128, 128, 1] -> latent [N, *shape]: stride-2 3x3 convolutions with LeakyReLU, then a dense layer."""
    image = keras.Input((128, 128, 1), name="image")
    x = image
    for i, width in enumerate(widths):
        x = keras.layers.Conv2D(width, 3, strides=2, padding="same", name=f"down{i}")(x)  # [N, 128 / 2**(i+1), ..., width]
        x = keras.layers.LeakyReLU(0.2, name=f"down{i}_act")(x)
    x = keras.layers.Flatten(name="flat")(x)  # [N, 4 * 4 * widths[-1]]
    x = keras.layers.Dense(int(np.prod(shape)), name="latent")(x)  # [N, prod(shape)]
    return keras.Model(image, keras.layers.Reshape(shape, name="latent_shape")(x), name=name)


def _offset(generator):
    """Latent the encoder's output is added to: 0 for z, the average w (over all ws) for W+."""
    shape = latent_shape(generator)
    if len(shape) == 1:
        return np.zeros(shape, np.float32)
    return np.broadcast_to(stylegan.w_average(generator), shape).astype(np.float32)  # [num_ws, w_dim]


def _prior_latents(generator, z, labels):
    """Latents of projection for prior draws z [N, latent_dim]: z itself, or their w repeated over W+."""
    if projection.latent_space(generator) == "z":
        return z
    w = np.asarray(generator.get_layer("mapping")(backend.with_label(z, labels), training=False))  # [N, w_dim]
    return np.repeat(w[:, None], stylegan.num_ws(generator), axis=1)  # [N, num_ws, w_dim]


class _Batches(keras.utils.PyDataset):
    """Shuffled real scans with fresh prior latents, one permutation and one noise draw per (seed, epoch)."""

    def __init__(self, generator, images, labels, batch_size, seed):
        super().__init__()
        self.generator, self.images, self.labels, self.batch_size, self.seed = generator, images, labels, batch_size, seed
        self.epoch = 0
        self.on_epoch_end()

    def __len__(self):
        return max(1, len(self.images) // self.batch_size)

    def on_epoch_end(self):
        rng = np.random.RandomState([self.seed, self.epoch])
        self.order = rng.permutation(len(self.images))
        self.z = rng.standard_normal((len(self.images), sampling.latent_dim_of(self.generator))).astype(np.float32)  # [M, latent]
        self.epoch += 1

    def __getitem__(self, i):
        pick = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        labels = None if self.labels is None else self.labels[pick].reshape(-1, 1).astype(np.int32)  # [B, 1]
        target = _prior_latents(self.generator, self.z[pick], labels)  # [B, *shape]
        inputs = (self.images[pick], target) if labels is None else (self.images[pick], target, labels)
        return inputs, (self.images[pick], target)


def _inverter(generator, encoder, offset):
    """Training graph: (real x, prior latent [, label]) -> (G(E(x) + offset), E(G(latent)) + offset)."""
    space = projection.latent_space(generator)
    image = keras.Input((128, 128, 1), name="real")
    latent = keras.Input(latent_shape(generator), name="prior_latent")
    label = keras.Input((1,), dtype="int32", name="label") if sampling.is_conditional(generator) else None
    shift = keras.layers.Lambda(lambda t: t + ops.convert_to_tensor(offset), name="offset")

    def decode(lat):
        return generator.get_layer("synthesis")(lat) if space == "w+" else generator(backend.with_label(lat, label))

    recon = keras.layers.Identity(name="recon")(decode(shift(encoder(image))))  # [N, 128, 128, 1]
    back = keras.layers.Identity(name="latent_back")(shift(encoder(decode(latent))))  # [N, *shape]
    inputs = [image, latent] + ([label] if label is not None else [])
    return keras.Model(inputs, [recon, back], name="inverter")


def image_loss(features=None, weights=None):
    """(target, reconstruction) -> per-image projection loss (L1 + 1 - MS-SSIM + feature distance), keras.ops."""
    w = {**projection.LOSS_WEIGHTS, **(weights or {}), "prior": 0.0}
    per_image = projection.loss_fn(lambda images: images, "z", features, w)
    return lambda target, recon: per_image(recon, target)


def train_encoder(generator, images, labels=None, epochs=20, batch_size=32, lr=1e-3, seed=0, features="domain", verbose=1):
    """Train an inversion encoder for a frozen generator on real scans [N, 128, 128, 1] (with class labels [N]
    for a conditional one) -> {"encoder", "offset", "history", "seconds", ...}."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (128, 128, 1) or len(images) < batch_size:
        raise ValueError(f"the inversion encoder trains on at least batch_size={batch_size} images [N, 128, 128, 1], got shape {images.shape}")
    if sampling.is_conditional(generator) and labels is None:
        raise ValueError("a conditional generator's encoder needs the class label of every training image")
    keras.utils.set_random_seed(seed)
    began = time.time()
    encoder, offset = build_encoder(latent_shape(generator)), _offset(generator)
    feature_model = domain_encoder.load_encoder() if features == "domain" else None
    was_trainable = generator.trainable
    generator.trainable = False
    if feature_model is not None:
        feature_model.trainable = False
    try:
        model = _inverter(generator, encoder, offset)
        model.compile(keras.optimizers.Adam(lr), loss=[image_loss(feature_model), "mse"], loss_weights=[1.0, ZIZ_WEIGHT])
        history = model.fit(_Batches(generator, images, labels, batch_size, seed), epochs=epochs, verbose=verbose)
    finally:
        generator.trainable = was_trainable
    return {"encoder": encoder, "offset": offset, "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "seconds": time.time() - began, "epochs": epochs, "n_images": len(images), "space": projection.latent_space(generator)}


def encode(inverter, images, batch_size=64):
    """Real scans [N, 128, 128, 1] -> latents [N, *shape] in one pass of a trained encoder."""
    images = np.asarray(images, np.float32)
    return (inverter["encoder"].predict(images, batch_size=batch_size, verbose=0) + inverter["offset"]).astype(np.float32)


def save(inverter, file, digest):
    """Write a trained encoder (float16 weights, offset, training summary) for the generator with weights digest `digest`."""
    weights = {f"w{i:02d}": w.astype(np.float16) for i, w in enumerate(inverter["encoder"].get_weights())}  # half the file; a start for refinement
    np.savez(file, **weights, offset=inverter["offset"], space=np.array(inverter["space"]), weights_sha256=np.array(digest),
             epochs=np.array(inverter["epochs"]), n_images=np.array(inverter["n_images"]), seconds=np.array(inverter["seconds"]),
             final_loss=np.array(inverter["history"]["loss"][-1]))


def load(file, digest=None):
    """A saved encoder, or None when the file is missing or was trained for other generator weights."""
    file = pathlib.Path(file)
    if not file.is_file():
        return None
    with np.load(file, allow_pickle=False) as z:
        if digest is not None and str(z["weights_sha256"]) != digest:
            return None
        offset = z["offset"]
        encoder = build_encoder(offset.shape)
        encoder.set_weights([z[k].astype(np.float32) for k in sorted(k for k in z.files if k.startswith("w") and k[1:].isdigit())])
        return {"encoder": encoder, "offset": offset, "space": str(z["space"]), "epochs": int(z["epochs"]),
                "n_images": int(z["n_images"]), "seconds": float(z["seconds"]), "final_loss": float(z["final_loss"])}


def load_or_train(run=None, generator=None, epochs=20, seed=0, data_dir=None, verbose=1):
    """(generator, encoder) of a model (run folder, or the release when None); the encoder is cached as
    `inversion-encoder.npz` beside the model's config and retrained when the generator's weights changed."""
    folder = runs.resolve_run(run)
    generator = generator or runs.load_generator(run)
    digest = checkpoints.weights_digest(generator)
    cached = load(folder / FILE, digest)
    if cached is not None:
        return generator, cached
    config = runs.model_config(run)
    images, labels, _, _ = dataset.training_split(config, data_dir)
    if verbose:
        print(f"training the inversion encoder of {folder.name} on its {len(images)} training scans ({epochs} epochs)")
    inverter = train_encoder(generator, images, labels if config.conditional else None, epochs=epochs, seed=seed, verbose=verbose)
    save(inverter, folder / FILE, digest)
    return generator, inverter


METHODS = ("optimise", "encoder", "encoder+optimise")


def project_with(method, generator, images, inverter=None, label=None, **kwargs):
    """Project images [N, 128, 128, 1] by `method`: "optimise" (seeded starts), "encoder" (one pass of the
    trained encoder) or "encoder+optimise" (the encoder's latents as the only start) -> projection dict."""
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose from {', '.join(METHODS)}")
    if method == "optimise":
        return projection.project(generator, images, label=label, **kwargs)
    began = time.time()
    latents = encode(inverter, images)
    if method == "encoder+optimise":
        return projection.project(generator, images, label=label, init=latents, **{**kwargs, "starts": 1})
    decode = projection.decoder(generator, inverter["space"], sampling.labels_for(generator, len(latents), label))
    return {"latents": latents, "images": np.clip(np.asarray(decode(latents)), -1.0, 1.0), "space": inverter["space"], "seconds": time.time() - began}
