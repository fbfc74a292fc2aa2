"""The three networks of an Adversarial Autoencoder (Makhzani et al., 2016, arXiv 1511.05644).

An encoder maps images to latent codes, a decoder maps codes back to images, and a
discriminator tells codes drawn from the prior from codes produced by the encoder. In an
AAE the *encoder* is the adversarial generator and the discriminator never sees images.

    from models import ModelConfig, build_models
    encoder, decoder, discriminator = build_models(ModelConfig(latent_dim=2))
    codes = encoder(images)          # [N, 1, 28, 28] or [N, 784] floats in [0, 1] -> [N, 2]
    images = decoder(codes)          # [N, 2] -> [N, 1, 28, 28] in [0, 1]
    logits = discriminator(codes)    # [N, 2] -> [N], logits of "drawn from the prior"
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModelConfig:
    # Defaults are the original model-zoo AAE's: 784-1000-1000-8 MLPs with these dropout rates.
    image_shape: tuple = (1, 28, 28)
    latent_dim: int = 8
    hidden_dim: int = 1000
    dropout: float = 0.25  # encoder and decoder
    dis_hidden_dim: int = 1000
    dis_dropout: float = 0.2
    # q(z|x), paper §2.1: "deterministic", "gaussian" (mean and log-variance, reparameterised) or
    # "universal" (noise is an extra input of the encoder).
    encoder: str = "deterministic"
    noise_dim: int = 8  # universal encoder: size of its N(0, I) noise input (the paper leaves it open)
    # What is learned, paper §§4-7; every mode but "unsupervised" is trained by modes.ModeTrainer.
    mode: str = "unsupervised"
    n_classes: int = 10  # labels in the data (digits)
    label_discriminator: bool = False  # §2.3: the discriminator also sees a one-hot label + "unlabelled" slot
    clusters: int = 16  # clustering / dim_reduction: size of the categorical code y (§6, Table 3: 16)

    @property
    def image_size(self) -> int:
        channels, height, width = self.image_shape
        return channels * height * width


class Dropout(nn.Dropout):
    """nn.Dropout with masks drawn from a quarter of the random numbers, on the CPU.

    On the CPU torch fills a dropout mask with a serial Bernoulli sampler (MKL's is used on Intel CPUs
    only): two Mersenne-Twister words per element, ~10 ns each, a fifth of a training step on 2 cores.
    Here each 64-bit word of `random_()` gives four 16-bit uniforms, and an element is kept where its
    uniform is below keep * 2^16 (rounded: 0.75 exactly, 0.8 as 0.800003). Same distribution and
    scaling as nn.Dropout, another random stream from the same seeded generator. On other devices,
    and in eval mode, it is nn.Dropout.
    """

    def forward(self, x):
        if not (self.training and 0 < self.p < 1 and x.device.type == "cpu"):
            return super().forward(x)
        keep = 1 - self.p
        words = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # all 64 bits
        uniform16 = words.view(torch.int16)[: x.numel()].view(x.shape)  # each in [-2^15, 2^15)
        mask = uniform16 < round(keep * 2**16) - 2**15
        return x * mask.to(x.dtype).div_(keep)  # what nn.Dropout computes: x * (bernoulli(keep) / keep)


def mlp(sizes, dropout):
    """Linear layers of the given sizes with Dropout then ReLU between them; the last is linear."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers += [Dropout(dropout), nn.ReLU()]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """q(z|x): deterministic, so the aggregated posterior is shaped by the data alone (paper §2)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = mlp([cfg.image_size, cfg.hidden_dim, cfg.hidden_dim, cfg.latent_dim], cfg.dropout)

    def forward(self, x):
        return self.net(x.flatten(1))  # [N, C, H, W] or [N, C*H*W] -> [N, C*H*W] -> [N, latent]


class GaussianEncoder(nn.Module):
    """q(z|x) = N(mean(x), exp(log_var(x))): a code is mean + std * eps, eps ~ N(0, I) (paper §2.1).

    The reparameterisation trick lets the adversarial gradient reach mean and variance. In eval mode it
    returns the mean, so pictures and metrics of a trained model are repeatable.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.net = mlp([cfg.image_size, cfg.hidden_dim, cfg.hidden_dim, 2 * cfg.latent_dim], cfg.dropout)

    def forward(self, x):
        mean, log_var = self.net(x.flatten(1)).chunk(2, dim=1)  # [N, 2 * latent] -> 2 x [N, latent]
        if not self.training:
            return mean
        return mean + torch.randn_like(mean) * (0.5 * log_var).exp()


class UniversalEncoder(nn.Module):
    """q(z|x, noise): deterministic in (x, noise), noise ~ N(0, I) an extra input (paper §2.1).

    The posterior's shape is then whatever the network makes of the noise ("universal approximator
    posterior"). In eval mode the noise is 0, so pictures and metrics are repeatable.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.noise_dim = cfg.noise_dim
        self.net = mlp([cfg.image_size + cfg.noise_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.latent_dim], cfg.dropout)

    def forward(self, x):
        x = x.flatten(1)  # [N, C*H*W]
        shape = (len(x), self.noise_dim)
        noise = torch.randn(shape, device=x.device) if self.training else torch.zeros(shape, device=x.device)
        return self.net(torch.cat([x, noise.to(x.dtype)], dim=1))  # [N, C*H*W + noise] -> [N, latent]


ENCODERS = {"deterministic": Encoder, "gaussian": GaussianEncoder, "universal": UniversalEncoder}
CATEGORICAL = ("semi_supervised", "clustering", "dim_reduction")  # encoders give a category y and a style z
MODES = ("unsupervised", "supervised", *CATEGORICAL)


class Decoder(nn.Module):
    """p(x|z): Bernoulli pixel means. `logits` is what training uses (stable BCE, autocast-safe).

    in_dim: the size of its input when that is not the latent code alone (modes.py).
    """

    def __init__(self, cfg: ModelConfig, in_dim=None):
        super().__init__()
        self.image_shape = tuple(cfg.image_shape)
        self.net = mlp([in_dim or cfg.latent_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.image_size], cfg.dropout)

    def logits(self, z):
        return self.net(z).view(-1, *self.image_shape)  # [N, C*H*W] -> [N, C, H, W]

    def forward(self, z):
        return torch.sigmoid(self.logits(z))


class Discriminator(nn.Module):
    """D(z): the logit that a code came from the prior rather than from the encoder.

    in_dim: the size of its input when that is not the latent code alone (a label is appended, or modes.py).
    """

    def __init__(self, cfg: ModelConfig, in_dim=None):
        super().__init__()
        self.net = mlp([in_dim or cfg.latent_dim, cfg.dis_hidden_dim, cfg.dis_hidden_dim, 1], cfg.dis_dropout)

    def forward(self, z):
        return self.net(z).squeeze(1)  # [N, 1] -> [N]


def build_models(cfg: ModelConfig):
    """Encoder, decoder and discriminator, freshly initialised from `cfg`.

    cfg.encoder picks the encoder. In mode "supervised" the decoder's input is [one-hot label, code]
    (paper §4) and the discriminator's [code, one-hot label] (modes.ModeTrainer.supervised_step); with
    label_discriminator the discriminator's is [code, one-hot of n_classes + 1 slots] (§2.3). The modes
    with a categorical code have other networks: modes.build_mode_models.
    """
    if cfg.encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {cfg.encoder!r}; choose one of: {', '.join(ENCODERS)}")
    if cfg.mode not in ("unsupervised", "supervised"):
        raise ValueError(f"mode {cfg.mode!r} has a categorical code; its networks come from modes.build_mode_models")
    label = cfg.n_classes if cfg.mode == "supervised" else 0
    decoder_in = cfg.latent_dim + label
    discriminator_in = cfg.latent_dim + (cfg.n_classes + 1 if cfg.label_discriminator else label)
    return ENCODERS[cfg.encoder](cfg), Decoder(cfg, decoder_in), Discriminator(cfg, discriminator_in)
