"""The one place a config picks its networks: `generator_for(config)` and `discriminator_for(config)` over
the families `paper` and `lean` (`nets.dcgan`), `style` (`nets.stylegan`), `fastgan` (`nets.fastgan`) and
`r3gan` (`nets.r3gan`).

Class conditioning (every family but `paper`): the generator takes [z, label] and the discriminator
[image, label], label an int32 class index [N, 1] (position in `config.classes`).
"""

from covgan_utils.nets import archs, fastgan, r3gan, stylegan
from covgan_utils.nets.dcgan import build_discriminator, build_generator

ARCHS, WIDTH_COUNTS = archs.ARCHS, archs.WIDTH_COUNTS


def class_count(config):
    """Classes the models are conditioned on: len(config.classes) when conditional, else 0."""
    return len(config.classes) if config.conditional else 0


def generator_for(config, name=None):
    """The generator a config describes (any family), its `output_scaling` set to the config's scaling
    (`sampling` shows its outputs through `scaling.to_view`)."""
    generator = _build_generator(config, name)
    generator.output_scaling = config.scaling
    return generator


def _build_generator(config, name):
    k = class_count(config)
    if config.arch == "style":
        return stylegan.build_style_generator(config.latent_dim, config.w_dim, config.mapping_layers, config.g_widths, k, name=name or "style_generator")
    if config.arch == "fastgan":
        return fastgan.build_fastgan_generator(config.latent_dim, config.g_widths, k, name=name or "fastgan_generator")
    if config.arch == "r3gan":
        return r3gan.build_r3gan_generator(config.latent_dim, config.g_widths, *_r3gan_shape(config), k, name=name or "r3gan_generator")
    return build_generator(
        config.arch, config.latent_dim, config.g_widths, config.g_base_width, config.upsample, name=name,
        block_convs=config.g_block_convs, out_kernel=config.g_out_kernel, noise_inputs=config.g_noise, num_classes=k,
    )


def discriminator_for(config):
    """The discriminator a config describes (any family). fastgan's returns [logit, reconstructions...]."""
    k = class_count(config)
    if config.arch == "style":
        return stylegan.build_residual_discriminator(config.d_widths, config.mbstd_group, k, config.d_equalized)
    if config.arch == "fastgan":
        return fastgan.build_fastgan_discriminator(config.d_widths, k)
    if config.arch == "r3gan":
        return r3gan.build_r3gan_discriminator(config.d_widths, *_r3gan_shape(config), k)
    return build_discriminator(config.arch, config.d_widths, config.d_dropout, spectral_norm=config.spectral_norm, num_classes=k)


def _r3gan_shape(config):
    """(blocks per stage, expansion, group width) of the r3gan family."""
    return config.blocks_per_stage, config.expansion, config.group_width
