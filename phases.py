"""The training phases of the paper's models: each takes one optimiser step on its own parameters.

Every AAE trains per batch in three phases (Makhzani et al. 2016, §2):

  1. reconstruction_phase  encoder + decoder minimise the pixel BCE of x -> z -> x'
  2. discriminator_phase   the discriminator learns to tell prior samples from (detached) codes
  3. generator_phase       the encoder learns to fool the discriminator (non-saturating loss)

The models of §§5-7 add classification_phase (labelled batches), category_generator_phase (the
categorical code's generator phase, with our balance and confidence terms), consistency_phase (ours)
and cluster_head_phase.
Each phase zeroes its optimiser's gradients right before its backward and returns its loss as a
detached tensor (no host synchronisation). `encoder` may be any function of the images: a model passes
e.g. its style head, or the code with a label appended.

    from phases import reconstruction_phase
    loss = reconstruction_phase(encoder, decoder, optimizer, x)
"""

import math
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F

from models import straight_through


def reconstruction_phase(encoder, decoder, optimizer, x, autocast=nullcontext):
    """Encoder and decoder take one step on the reconstruction BCE; returns the mean per-pixel loss."""
    with autocast():
        logits = decoder.logits(encoder(x))
        loss = F.binary_cross_entropy_with_logits(logits.float(), x)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def discriminator_phase(encoder, discriminator, optimizer, x, z_prior, autocast=nullcontext, codes=None):
    """The discriminator takes one step on prior samples (label 1) against codes (label 0).

    codes: encoder(x) when the caller has them (the plain AAE shares them with the generator
    phase); otherwise they are computed here without gradient, as this phase never changes the
    encoder. Prior samples and codes share one forward pass. Returns the loss and the accuracy.
    """
    if codes is None:
        with torch.no_grad(), autocast():
            codes = encoder(x)
    z = torch.cat([z_prior, codes.detach().to(z_prior.dtype)])  # [2N, latent]
    target = torch.cat([torch.ones(len(z_prior), device=z.device), torch.zeros(len(codes), device=z.device)])
    with autocast():
        logits = discriminator(z).float()
        loss = F.binary_cross_entropy_with_logits(logits, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    accuracy = ((logits.detach() > 0) == target.bool()).float().mean()
    return loss.detach(), accuracy


def generator_phase(encoder, discriminator, optimizer, x, autocast=nullcontext, codes=None):
    """The encoder takes one step towards codes the discriminator calls prior samples.

    Non-saturating loss -log D(E(x)) (Goodfellow et al. 2014). The discriminator's weights are
    frozen for the backward, so no gradient is computed for them. codes: encoder(x) with its graph,
    when the caller has them; otherwise the encoder runs here.
    """
    with frozen(discriminator):
        with autocast():
            logits = discriminator(encoder(x) if codes is None else codes).float()
            loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def classification_phase(encoder, optimizer, x, labels, autocast=nullcontext):
    """q(y|x) takes one step on the cross-entropy of a labelled batch (§5's semi-supervised phase)."""
    with autocast():
        logits = encoder.split(x)[0].float()
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def consistency_phase(encoder, optimizer, x, view, weight, autocast=nullcontext, threshold=0.0):
    """q(y|view) takes one step towards q(y|x), held fixed: `weight` * the cross-entropy between them.

    Ours, not the paper's: a category should not change when the image moves by a pixel or two (view:
    x shifted, data.translate). Self-augmented training as in IMSAT (Hu et al. 2017), which with the
    balance and confidence terms of category_generator_phase is its objective. threshold > 0: the target
    is instead the one-hot of argmax q(y|x), for the images whose max q(y|x) exceeds it and no others
    (pseudo-labels, as in FixMatch, Sohn et al. 2020). Returns the weighted loss.
    """
    with torch.no_grad(), autocast():
        target = encoder.category(x).float()
        if threshold > 0:
            sure = target.max(1, keepdim=True).values > threshold
            target = F.one_hot(target.argmax(1), target.shape[1]).float() * sure
    with autocast():
        logits = encoder.split(view)[0].float()
    loss = weight * -(target * F.log_softmax(logits, 1)).sum(1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def category_generator_phase(encoder, discriminator, optimizer, x, autocast=nullcontext, balance=1.0, confidence=0.0):
    """The encoder takes one step towards one-hot codes y the category discriminator calls prior draws,
    plus `balance` * (log K - entropy of the batch's mean q(y|x)) + `confidence` * (mean entropy of q(y|x)).

    Both terms are ours, not the paper's; with equal weights they are log K minus the mutual information
    of image and category that the batch estimates. The balance term: the discriminator judges each code
    alone; when every image moves to the same category at once (as they do at first: the discriminator's
    gradient is the same for all of them), it cannot push them apart fast enough. It is 0 when the batch
    spreads its probability evenly over the K categories, and grows as the batch gathers in fewer.
    The confidence term: the discriminator sees one-hots (straight_through), so nothing else asks q(y|x)
    to be sure of its category; with the balance term alone q(y|x) stayed near uniform (clustering,
    mnist-sample: mean max probability 0.12 of 16 categories, argmax changed by the dropout draw for 31 %
    of test images). Returns the total loss.
    """
    with frozen(discriminator):
        with autocast():
            probs = encoder.category(x).float()  # [N, K]
            logits = discriminator(straight_through(probs)).float()
        adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        mean = probs.mean(0)
        spread = math.log(len(mean)) - entropy(mean)
        loss = adversarial + balance * spread + confidence * entropy(probs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.detach()


def cluster_head_phase(decoder, optimizer, margin):
    """The cluster heads take one step apart: sum over pairs of relu(margin - distance) (§7)."""
    loss = F.relu(margin - torch.pdist(decoder.heads)).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@contextmanager
def frozen(module):
    """module's weights get no gradient inside (a generator phase's backward), and do again after."""
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)


def entropy(probs):
    """Entropy (nats) of each distribution along the last dimension."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)
