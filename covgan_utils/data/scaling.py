"""How a model's training images are scaled, and the way back for looking at its samples.

The project's scans are float32 in [-1, 1] (`decoding.preprocess`). The paper's public code read the PNGs
as floats in [0, 1] and then applied `(x - 127.5) / 127.5`, meant for 8-bit values: every scan it trained on
lay in [-1, -1 + 2/255] = [-1, -0.992], near-black. `Config.scaling` picks one of the two:

- "full": the scans as they are, in [-1, 1];
- "paper-code": the paper code's mapping, to reproduce what its model saw.

`to_training` maps the project's images to what a model of a scaling trains on; `to_view` is its inverse,
through which the samples of such a model are shown, checked for blank images and collapse, and scored:
for "paper-code" that is what the paper's code would have shown after saving its outputs as 8-bit images.
"""
import numpy as np

SCALINGS = ("full", "paper-code")  # the values of Config.scaling


PAPER_CODE_TOP = -1.0 + 2.0 / 255.0  # the brightest value a "paper-code" model trains on (white scans)


def check_scaling(scaling):
    """`scaling` when it is one of SCALINGS, else a one-line ValueError naming it and the choices."""
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; choose from {', '.join(SCALINGS)}")
    return scaling


def to_training(images, scaling):
    """Images [..., 128, 128, 1] in [-1, 1] -> float32 as a model of `scaling` trains on them
    ("paper-code": [-1, -0.992])."""
    images = np.asarray(images, np.float32)
    if check_scaling(scaling) == "full":
        return images
    x01 = (images + 1.0) / 2.0  # [..., 128, 128, 1] in [0, 1], as the paper's code read its PNGs
    return ((x01 - 127.5) / 127.5).astype(np.float32)  # the paper's normalisation for 8-bit values


def to_view(images, scaling):
    """Outputs of a model of `scaling` -> float32 images in [-1, 1] to show and score (inverse of `to_training`;
    for "paper-code" outputs above -0.992 are clipped to white, as the paper's code saved them)."""
    images = np.asarray(images, np.float32)
    if check_scaling(scaling) == "full":
        return images
    x01 = np.clip((images + 1.0) * 127.5, 0.0, 1.0)  # [..., 128, 128, 1] in [0, 1]
    return (2.0 * x01 - 1.0).astype(np.float32)
