"""The encoder types of models.py (paper §2.1): each trains, is stochastic only where it should be, and
comes back from a checkpoint as it was saved."""

from dataclasses import replace

import pytest
import torch

import utils
import variants
from data import to_float
from models import ENCODERS, build_plain
from train import Trainer, TrainConfig


@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_encoder_trains_and_round_trips_a_checkpoint(encoder, tiny_model, tiny_train, dataset, tmp_path):
    cfg = replace(tiny_model, encoder=encoder)
    t = Trainer(cfg, replace(tiny_train, epochs=1), "cpu")
    before = [p.detach().clone() for p in t.model.encoder.parameters()]
    t.fit(dataset, log=lambda line: None)
    assert all(not torch.equal(a, b) for a, b in zip(before, t.model.encoder.parameters()))  # every layer stepped
    utils.save_checkpoint(t.state_dict(), tmp_path / "aae.pt")
    trained = utils.load_models(tmp_path)
    assert type(trained.encoder) is ENCODERS[encoder] and trained.model_cfg.encoder == encoder
    x = to_float(dataset.test.images[:20])
    t.model.encoder.eval(), t.model.decoder.eval()
    with torch.no_grad():
        assert torch.equal(trained.encoder(x), t.model.encoder(x))
        assert torch.equal(trained.decoder(trained.encoder(x)), t.model.decoder(t.model.encoder(x)))


@pytest.mark.parametrize("encoder", ["gaussian", "universal"])
def test_stochastic_encoders_draw_in_training_and_are_repeatable_in_eval(encoder, tiny_model, dataset):
    torch.manual_seed(0)
    net = build_plain(replace(tiny_model, encoder=encoder, dropout=0.0))[0]
    x = to_float(dataset.test.images[:50])
    with torch.no_grad():
        a, b = net(x), net(x)
        assert a.shape == (50, tiny_model.latent_dim) and not torch.equal(a, b)  # a fresh draw each call
        net.eval()
        assert torch.equal(net(x), net(x))


def test_gaussian_encoder_codes_are_mean_plus_std_times_noise(tiny_model, dataset):
    torch.manual_seed(0)
    net = build_plain(replace(tiny_model, encoder="gaussian", dropout=0.0))[0]
    # Untrained log-variances are near 0, where std and variance are both near 1: set them to +-1.5, where the
    # std is exp(+-0.75) = 2.12 and 0.47 and the variance 4.48 and 0.22. Mean 1 and -2.
    with torch.no_grad():
        net.net[-1].weight.zero_()
        net.net[-1].bias.copy_(torch.tensor([1.0, -2.0, 1.5, -1.5]))
        z = net(to_float(dataset.test.images[:1]).expand(4000, -1, -1, -1))
    std = torch.tensor([0.75, -0.75]).exp()
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0]), rtol=0, atol=4 * std.max().item() / 4000**0.5)
    # a sample std of n = 4000 normal draws has a relative standard error of 1 / sqrt(2 n) = 1.1 %: 5 % is 4.5 of them
    assert torch.allclose(z.std(0), std, rtol=0.05, atol=0)


def test_gradient_reaches_the_variance_through_the_reparameterisation(tiny_model, dataset):
    net = build_plain(replace(tiny_model, encoder="gaussian"))[0]
    net(to_float(dataset.test.images[:10])).pow(2).sum().backward()
    last = net.net[-1]
    assert last.weight.grad[tiny_model.latent_dim:].abs().sum() > 0  # the log-variance rows


def test_default_networks_are_unchanged(tiny_model):
    enc, dec, dis = variants.build(tiny_model, TrainConfig(), "cpu").nets.values()  # the plain AAE's own
    assert [type(m).__name__ for m in (enc, dec, dis)] == ["Encoder", "Decoder", "Discriminator"]
    assert [type(m).__name__ for m in build_plain(tiny_model)] == ["Encoder", "Decoder", "Discriminator"]
    assert dec.net[0].in_features == dis.net[0].in_features == tiny_model.latent_dim


def test_supervised_decoder_and_label_discriminator_take_the_label_too(tiny_model):
    # two models now (the label discriminator goes with --mode unsupervised and a 2-D mixture or swiss roll prior)
    dec = variants.build(replace(tiny_model, mode="supervised"), TrainConfig(), "cpu").decoder
    label_discriminator = replace(tiny_model, label_discriminator=True)
    dis = variants.build(label_discriminator, TrainConfig(prior="mixture"), "cpu").discriminator
    assert dec.net[0].in_features == tiny_model.latent_dim + 10
    assert dis.net[0].in_features == tiny_model.latent_dim + 11  # ten classes and "unlabelled"


def test_unknown_encoder_is_refused(tiny_model):
    with pytest.raises(ValueError, match="unknown encoder 'vae'"):
        variants.build(replace(tiny_model, encoder="vae"), TrainConfig(), "cpu")
