"""The speed-ups change no numbers: faster dropout masks are torch's own, bit for bit."""

import pytest
import torch
from torch import nn

import models


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.25, 0.2, 0.5])
def test_dropout_draws_the_same_masks_and_gradients_as_nn_dropout(p, dtype):
    if not models._draws_like_bernoulli():  # e.g. Intel CPUs, where torch samples with MKL: nn.Dropout is used
        pytest.skip("this CPU's torch draws Bernoulli masks another way; models.Dropout falls back to nn.Dropout")
    x = torch.randn(64, 300, dtype=dtype, requires_grad=True)
    outputs, grads, states = [], [], []
    for layer in (nn.Dropout(p), models.Dropout(p)):
        torch.manual_seed(7)
        y = layer(x)
        (g,) = torch.autograd.grad(y.float().square().sum(), x)
        outputs.append(y), grads.append(g), states.append(torch.get_rng_state())
    assert torch.equal(outputs[0], outputs[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.equal(states[0], states[1])  # the global generator advanced by the same amount
    assert 0 < (outputs[1] == 0).float().mean() < 2 * p


def test_dropout_is_identity_in_eval_mode():
    layer = models.Dropout(0.25).eval()
    x = torch.randn(8, 10)
    assert torch.equal(layer(x), x)


def test_inexact_dropout_keeps_the_rate_and_scale():
    layer = models.Dropout(0.2)
    layer.exact = False
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, dtype=torch.bfloat16)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.8) < 0.002
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / 0.8))  # bf16's 1/0.8, as nn.Dropout scales
    assert not torch.equal(layer(x), y)  # fresh masks each call
