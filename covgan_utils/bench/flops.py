"""Floating-point operations of a training step, counted from the Keras models' layers.

Forward pass, per image, one multiply-add = 2 FLOPs:

- Conv2D (and any layer with a 4-D `kernel` [k_h, k_w, C_in, C_out], such as the style family's modulated
  convolution): 2 * H_out * W_out * k_h * k_w * C_in * C_out
- Conv2DTranspose (kernel [k_h, k_w, C_out, C_in]): each input pixel scatters a k_h x k_w x C_out patch,
  2 * H_in * W_in * k_h * k_w * C_in * C_out
- Dense (any layer with a 2-D `kernel` [in, out]): 2 * in * out per position (one position for a vector)
- SpectralNormalization counts the layer it wraps; a nested model counts its layers.
- Everything else (biases, BatchNorm, activations, resizing, dropout, embeddings) is elementwise or a
  lookup and is not counted: below 1% of the convolutions in the lean and paper models.

A training step of batch B with `g_steps` generator updates, G and D the forward FLOPs per image:

    step = B * (G + 3 D + 3 D) + g_steps * B * (3 G + 2 D)

The discriminator update runs G forward once (the fakes; no gradient flows into G), then D forward and
backward on the real and on the fake batch, backward counted as 2x forward (gradients of the inputs and
of the weights). Each generator update runs G forward and backward (3 G) and D forward and backward to
its input only, no weight gradients (2 D). R1, augmentation, EMA and the optimizer updates are not
counted: the count is the work of the extras-off step and of the textbook step, and a lower bound for
the project step. As a check, XLA's cost analysis of the compiled JAX textbook step of `quick` gives
108.1 GFLOP where this count gives 119.9 (CPU, JAX 0.10.2): the two agree to 11%.
"""
import math

import keras


class Uncountable(ValueError):
    """A layer with weights whose FLOPs this module does not know (its class name is the message)."""


def layer_flops(layer, in_shape, out_shape):
    """Forward FLOPs per image of one call of `layer` (shapes without the batch axis)."""
    if isinstance(layer, keras.Model):
        return forward_flops(layer)
    if isinstance(layer, keras.layers.SpectralNormalization):
        return layer_flops(layer.layer, in_shape, out_shape)
    kernel = getattr(layer, "kernel", None)
    if isinstance(layer, keras.layers.Conv2DTranspose):
        k_h, k_w, c_out, c_in = kernel.shape
        return 2 * in_shape[0] * in_shape[1] * k_h * k_w * c_in * c_out
    if kernel is not None and len(kernel.shape) == 4:
        return 2 * out_shape[0] * out_shape[1] * math.prod(kernel.shape)
    if kernel is not None and len(kernel.shape) == 2 and not isinstance(layer, keras.layers.Embedding):
        return 2 * math.prod(out_shape[:-1]) * math.prod(kernel.shape)
    if kernel is not None:
        raise Uncountable(type(layer).__name__)
    return 0


def forward_flops(model):
    """Forward FLOPs per image of a functional model: the sum over every call of every layer."""
    total = 0
    for layer in model.layers:
        for node in getattr(layer, "_inbound_nodes", []):
            if not node.input_tensors:  # an InputLayer
                continue
            in_shape = tuple(node.input_tensors[0].shape[1:])
            out_shape = tuple(keras.tree.flatten(node.output_tensors)[0].shape[1:])
            total += layer_flops(layer, in_shape, out_shape)
    return total


def step_flops(g_forward, d_forward, batch, g_steps=1):
    """FLOPs of one training step (the module docstring's formula)."""
    return batch * (g_forward + 6 * d_forward) + g_steps * batch * (3 * g_forward + 2 * d_forward)


def count(generator, discriminator, batch, g_steps=1):
    """{"g_forward", "d_forward" (per image), "step"} or {"note": "n/a (<layer class>)"}."""
    try:
        g, d = forward_flops(generator), forward_flops(discriminator)
    except Uncountable as err:
        return {"note": f"n/a ({err})"}
    return {"g_forward": g, "d_forward": d, "step": step_flops(g, d, batch, g_steps)}
