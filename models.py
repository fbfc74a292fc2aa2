"""The three networks of an Adversarial Autoencoder (Makhzani et al., 2016, arXiv 1511.05644).

An encoder maps images to latent codes, a decoder maps codes back to images, and a
discriminator tells codes drawn from the prior from codes produced by the encoder. In an
AAE the *encoder* is the adversarial generator and the discriminator never sees images.

    from models import Decoder, Discriminator, Encoder, ModelConfig
    cfg = ModelConfig(latent_dim=2)
    encoder, decoder, discriminator = Encoder(cfg), Decoder(cfg), Discriminator(cfg)
    codes = encoder(images)          # [N, 1, 28, 28] or [N, 784] floats in [0, 1] -> [N, 2]
    images = decoder(codes)          # [N, 2] -> [N, 1, 28, 28] in [0, 1]
    logits = discriminator(codes)    # [N, 2] -> [N], logits of "drawn from the prior"

Which networks a model of the paper uses, and how it wires them, is its variant's (aae.py, conditional.py, categorical.py).
"""

import functools

import torch
from torch import nn

from config import ModelConfig


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


# Layers narrower than this (the 8-D code's, the discriminator's output) stay with torch's products: their
# products take microseconds, and each oneDNN call and Python backward adds ~100 us to a forward and backward.
ONEDNN_MIN_WIDTH = 64


@functools.cache
def onednn_available():
    """Whether this torch build can run torch.ops.mkldnn._linear_pointwise on dense fp32 tensors."""
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        return bool(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "").eq(3).all())
    except (AttributeError, RuntimeError):
        return False


def _onednn_product(x, weight, bias=None):
    """x @ weight.T + bias by oneDNN; x [N, in] and weight [out, in] may be transposed views."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """F.linear with oneDNN's forward and input-gradient products.

    The weight gradient grad.T @ x stays with torch.mm: oneDNN would first copy the transposed grad
    (its input must be contiguous), and whole steps were then no faster. Like autograd's linear, it
    computes only the gradients that are needed (none for a frozen weight or for data).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = _onednn_product(grad, weight.t()) if need_x else None  # [N, out] @ [out, in]
        grad_weight = grad.t().mm(x) if need_weight else None  # [out, N] @ [N, in]
        grad_bias = grad.sum(0) if ctx.has_bias and need_bias else None
        return grad_x, grad_weight, grad_bias


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) whose fp32 CPU products go through oneDNN.

    At this model's shapes (batch 100 against 1000 x 1000 weights) oneDNN's kernels ran 1.25-1.4x faster
    than torch's default BLAS (MKL) on 2 cores of an AMD EPYC (docs/performance.md). Everywhere else (other
    devices and dtypes, bf16 autocast, narrow layers, `onednn` off, a torch without oneDNN) it is
    nn.Linear. The two differ only in the rounding of the sums. use_onednn() switches a whole model.
    """

    onednn = True  # False: torch's own products (bench.py's comparison row); set per layer by use_onednn

    def forward(self, x):
        if self.uses_onednn(x):
            return _OneDNNLinear.apply(x, self.weight, self.bias)
        return super().forward(x)

    def uses_onednn(self, x):
        return (self.onednn and min(self.in_features, self.out_features) >= ONEDNN_MIN_WIDTH
                and x.device.type == "cpu" and x.dim() == 2 and x.dtype == self.weight.dtype == torch.float32
                and not _cpu_autocast() and onednn_available())


def use_onednn(module, enabled):
    """Switch every Linear inside `module` to oneDNN's products (True) or torch's own (False)."""
    for layer in module.modules():
        if isinstance(layer, Linear):
            layer.onednn = enabled


def _cpu_autocast():
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # a torch older than the device_type argument
        return torch.is_autocast_cpu_enabled()


def mlp(sizes, dropout):
    """Linear layers of the given sizes with Dropout then ReLU between them; the last is linear."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(n_in, n_out))
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


class Decoder(nn.Module):
    """p(x|z): Bernoulli pixel means. `logits` is what training uses (stable BCE, autocast-safe).

    in_dim: the size of its input when that is not the latent code alone (a label or category is prepended).
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

    in_dim: the size of its input when that is not the latent code alone (a label or category is appended).
    """

    def __init__(self, cfg: ModelConfig, in_dim=None):
        super().__init__()
        self.net = mlp([in_dim or cfg.latent_dim, cfg.dis_hidden_dim, cfg.dis_hidden_dim, 1], cfg.dis_dropout)

    def forward(self, z):
        return self.net(z).squeeze(1)  # [N, 1] -> [N]


class CategoricalEncoder(nn.Module):
    """q(y|x) and q(z|x) from one network: logits of K categories and a style code (paper §§5-7).

    forward(x) is the decoder's input [y, z]: [N, K + latent], so decoder(encoder(x)) is the
    autoencoder and the reconstruction phase applies unchanged.

    y is the one-hot of the most probable category, with the softmax's gradient (straight-through),
    where the paper feeds the softmax itself. Measured on mnist-sample: with the softmax, the category
    discriminator won by telling a soft vector from an exact one-hot; its generator pushed every image's
    softmax towards the same corner until it saturated (max prob 0.9998), and a saturated softmax passes
    no gradient back, so no image could leave: 1 of 16 clusters used after 2 epochs. A one-hot cannot
    be told from a prior draw by its shape, only by how often each category comes up — what the
    categorical prior is about — and the decoder then reads a category it cannot ignore.
    hard=False (dim_reduction): the decoder reads the softmax; with a one-hot its 2-D map W y + z
    was a few blobs (5-NN on it 81.8 %, against 84.6 % with the softmax; mnist-sample, 10 epochs).
    """

    def __init__(self, cfg, n_categories, hard=True):
        super().__init__()
        self.n_categories = n_categories
        self.hard = hard
        self.net = mlp([cfg.image_size, cfg.hidden_dim, cfg.hidden_dim, n_categories + cfg.latent_dim], cfg.dropout)

    def split(self, x):
        out = self.net(x.flatten(1))  # [N, K + latent]
        return out[:, : self.n_categories], out[:, self.n_categories :]  # logits of y [N, K], style z [N, latent]

    def category(self, x):
        """q(y|x), the softmax: [N, K]."""
        return self.split(x)[0].softmax(1)

    def one_hot(self, x):
        """y: the one-hot of argmax q(y|x), with q(y|x)'s gradient: [N, K]."""
        return straight_through(self.split(x)[0].softmax(1))

    def style(self, x):
        return self.split(x)[1]

    def style_and_category(self, x):
        """[z, y]: the style beside the one-hot category, which passes no gradient: [N, latent + K]."""
        logits, z = self.split(x)
        return torch.cat([z, one_hot(logits.argmax(1), self.n_categories, z.dtype)], dim=1)

    def forward(self, x):
        logits, z = self.split(x)
        y = straight_through(logits.softmax(1)) if self.hard else logits.softmax(1)
        return torch.cat([y, z.to(logits.dtype)], dim=1)


class HeadsDecoder(nn.Module):
    """p(x | W y + z): [y, z] becomes the representation W y + z, then a Decoder (paper §7).

    W = head_scale * heads: cluster head k is row k, initialised `margin` apart on average (in heads'
    units); head_scale (the style prior's std) is saved with the weights.
    """

    def __init__(self, cfg, n_categories, head_scale, margin):
        super().__init__()
        self.n_categories = n_categories
        self.heads = nn.Parameter(margin * torch.randn(n_categories, cfg.latent_dim))
        self.register_buffer("head_scale", torch.tensor(float(head_scale)))
        self.decoder = Decoder(cfg)

    def represent(self, code):
        y, z = code[:, : self.n_categories], code[:, self.n_categories :]
        return y @ (self.head_scale * self.heads).to(y.dtype) + z  # [N, K] @ [K, latent] + [N, latent]

    def logits(self, code):
        return self.decoder.logits(self.represent(code))

    def forward(self, code):
        return torch.sigmoid(self.logits(code))


def one_hot(index, k, dtype=torch.float32):
    """F.one_hot(index, k) as `dtype`, by a scatter: no check of the values, which a CUDA graph cannot capture."""
    return torch.zeros(len(index), k, dtype=dtype, device=index.device).scatter_(1, index.unsqueeze(1), 1)


def straight_through(probs):
    """The one-hot of each row's argmax in the forward pass, the gradient of `probs` in the backward."""
    hard = one_hot(probs.argmax(1), probs.shape[1], probs.dtype)
    return hard + probs - probs.detach()


def build_plain(cfg: ModelConfig):
    """The plain AAE's encoder, decoder and discriminator for cfg's sizes, freshly initialised."""
    return ENCODERS[cfg.encoder](cfg), Decoder(cfg), Discriminator(cfg)
