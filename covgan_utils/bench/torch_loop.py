"""The same GAN training step in PyTorch, for scale: torch modules of the same shapes and channels, built by
walking the Keras functional models layer by layer, and a textbook BCE loop (one D update on real and
fake, one G update) on the same batch.

Only chains of Dense, Reshape, Conv2D, Conv2DTranspose, UpSampling2D, BatchNormalization, LeakyReLU /
ReLU / tanh / sigmoid activations, Flatten and Dropout are mapped (the `lean` and `paper` families); a
model with another layer, or with branches, is reported as "n/a (<layer class>)". Weights are not copied:
the loop times the work, not the values. PyTorch is optional (`torch` in the [fid] extra); without it
the measurement is "n/a (torch not installed)".
"""
import time

import keras

from covgan_utils.nets import families
from covgan_utils.util import backend, hardware


class Unmappable(ValueError):
    """A Keras layer (or graph shape) with no torch counterpart here; the message is its class name."""


def chain(model):
    """[(layer, input shape, output shape)] of a model that is one chain of single-input layers (shapes
    without the batch axis, channels last), else Unmappable naming the first layer that branches."""
    out, previous = [], None
    for layer in model.layers:
        nodes = getattr(layer, "_inbound_nodes", [])
        if isinstance(layer, keras.layers.InputLayer):
            if previous is not None:
                raise Unmappable(f"{type(layer).__name__}: a second input")
            previous = layer.output
            continue
        inputs = keras.tree.flatten(nodes[0].input_tensors) if len(nodes) == 1 else []
        if len(inputs) != 1 or inputs[0] is not previous:
            raise Unmappable(type(layer).__name__)
        previous = keras.tree.flatten(nodes[0].output_tensors)[0]
        out.append((layer, tuple(inputs[0].shape[1:]), tuple(previous.shape[1:])))
    return out


def _activation(torch, fn):
    name = getattr(fn, "__name__", "linear")
    table = {"linear": None, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}
    if name not in table:
        raise Unmappable(f"activation {name}")
    return [table[name]()] if table[name] else []


def _view(torch, target):
    """Keras Reshape to (H, W, C) -> a torch module reshaping to (C, H, W) (channels first); other targets as they are."""
    shape = (target[2], target[0], target[1]) if len(target) == 3 else tuple(target)

    class View(torch.nn.Module):
        def forward(self, x):
            return x.reshape(x.shape[0], *shape)

    return View()


def _same_padding(kernel, stride):
    """(padding, output_padding) of a torch transposed convolution giving Keras' "same" output size (H * stride)."""
    padding = -(-(kernel - stride) // 2)
    return padding, 2 * padding - (kernel - stride)


def torch_layers(torch, layer, in_shape, out_shape):
    """The torch modules of one Keras layer (channels first)."""
    nn, name = torch.nn, type(layer).__name__
    if isinstance(layer, keras.layers.Dense):
        return [nn.Linear(in_shape[-1], layer.units, bias=layer.use_bias)] + _activation(torch, layer.activation)
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
        k, s = layer.kernel_size[0], layer.strides[0]
        if layer.kernel_size[0] != layer.kernel_size[1] or layer.strides[0] != layer.strides[1] or layer.dilation_rate != (1, 1) \
                or getattr(layer, "groups", 1) != 1 or layer.padding != "same":
            raise Unmappable(f"{name} ({layer.kernel_size}, strides {layer.strides}, padding {layer.padding})")
        if isinstance(layer, keras.layers.Conv2DTranspose):
            pad, extra = _same_padding(k, s)
            module = nn.ConvTranspose2d(in_shape[-1], layer.filters, k, s, padding=pad, output_padding=extra, bias=layer.use_bias)
        else:
            module = nn.Conv2d(in_shape[-1], layer.filters, k, s, padding=k // 2, bias=layer.use_bias)
        return [module] + _activation(torch, layer.activation)
    if isinstance(layer, keras.layers.UpSampling2D):
        return [nn.Upsample(scale_factor=layer.size[0], mode=layer.interpolation)]
    if isinstance(layer, keras.layers.BatchNormalization):
        norm = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
        return [norm(in_shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum, affine=layer.center and layer.scale)]
    if isinstance(layer, keras.layers.LeakyReLU):
        return [nn.LeakyReLU(layer.negative_slope)]
    if isinstance(layer, keras.layers.ReLU) and not layer.negative_slope and layer.max_value is None and not layer.threshold:
        return [nn.ReLU()]
    if isinstance(layer, keras.layers.Activation):
        return _activation(torch, layer.activation)
    if isinstance(layer, keras.layers.Flatten):
        return [nn.Flatten()]
    if isinstance(layer, keras.layers.Dropout):
        return [nn.Dropout(layer.rate)]
    if isinstance(layer, keras.layers.Reshape):
        return [_view(torch, out_shape)]
    raise Unmappable(name)


def torch_model(model):
    """A torch.nn.Sequential with the shapes and channels of a Keras chain model (channels first)."""
    import torch

    return torch.nn.Sequential(*[m for layer, i, o in chain(model) for m in torch_layers(torch, layer, i, o)])


def torch_models(config):
    """(generator, discriminator) as torch modules, from the models the project builds for `config`."""
    with backend.dtype_policy("float32"):
        return torch_model(families.generator_for(config)), torch_model(families.discriminator_for(config))


def time_loop(config, batch, steps):
    """Seconds per step of a textbook PyTorch BCE loop on `batch` [B, 128, 128, 1] -> {"ms", "steps"} or {"note"}."""
    try:
        import torch
    except ImportError:
        return {"note": "n/a (torch not installed)"}
    try:
        G, D = torch_models(config)
    except Unmappable as err:
        return {"note": f"n/a ({err})"}
    torch.set_num_threads(hardware.cpu_cores()[0])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    G, D = G.to(device).train(), D.to(device).train()
    autocast = {"mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}.get(config.precision)
    real = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(device)  # [B, 1, 128, 128]
    step = _loop(torch, G, D, real, config, device, autocast)
    float(step())  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)  # wait for the device
    return {"ms": 1000 * (time.perf_counter() - start) / steps, "steps": steps, "torch_version": torch.__version__, "threads": torch.get_num_threads()}


def _loop(torch, G, D, real, config, device, autocast):
    """One step of the textbook loop as a closure -> g_loss."""
    bce, n = torch.nn.BCEWithLogitsLoss(), real.shape[0]
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=(config.beta_1, config.beta_2))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=(config.beta_1, config.beta_2))
    ones, zeros = torch.ones(n, 1, device=device), torch.zeros(n, 1, device=device)  # [B, 1]

    def cast():
        return torch.autocast(device, dtype=autocast, enabled=autocast is not None)

    def step():
        with cast():
            fake = G(torch.randn(n, config.latent_dim, device=device))  # [B, 1, 128, 128]
            d_loss = bce(D(real).float(), ones) + bce(D(fake.detach()).float(), zeros)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with cast():
            g_loss = bce(D(G(torch.randn(n, config.latent_dim, device=device))).float(), ones)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return g_loss.detach()

    return step
