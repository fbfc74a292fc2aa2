"""The speed-ups change no numbers: faster dropout masks are torch's own, CUDA-graph steps are eager steps."""

from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import models
import train
from train import Trainer, TrainConfig


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


class _ReplayingGraph:
    """Stands in for a CUDA graph on the CPU: a replay reruns the captured function into its output."""

    def __init__(self, fn):
        self.fn, self.out = fn, torch.zeros(4, dtype=torch.float64)

    def replay(self):
        self.out.copy_(self.fn())


@pytest.fixture
def cpu_graphs(monkeypatch):
    """GraphedStep's plumbing (warm-up, static inputs, prior stream, loss sums) runnable on the CPU."""
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: SimpleNamespace(wait_stream=lambda other: None))
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: nullcontext())
    captured = []

    def capture(fn):
        captured.append(_ReplayingGraph(fn))
        return captured[-1], captured[-1].out

    monkeypatch.setattr(train, "capture", capture)
    return captured


def fit(model_cfg, cfg, dataset, graphs):
    t = Trainer(model_cfg, cfg, "cpu")
    t.cuda_graphs = graphs
    t.fit(dataset, log=lambda line: None)
    return t


def assert_same_weights_and_history(a, b):
    for name in ("encoder", "decoder", "discriminator"):
        for key, value in getattr(a, name).state_dict().items():
            assert torch.equal(value, getattr(b, name).state_dict()[key]), f"{name}.{key}"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert torch.equal(a.prior_rng.get_state(), b.prior_rng.get_state())


def test_graphed_steps_train_as_eager_steps_do(tiny_model, dataset, cpu_graphs):
    cfg = TrainConfig(epochs=2, batch_size=30, seed=0)  # 200 images: 6 full batches and one of 20, an epoch
    eager, graphed = fit(tiny_model, cfg, dataset, False), fit(tiny_model, cfg, dataset, True)
    assert len(cpu_graphs) == 1 and graphed._graphed.graph is cpu_graphs[0]  # captured once, then replayed
    assert_same_weights_and_history(eager, graphed)


def test_a_failed_capture_falls_back_to_eager_steps(tiny_model, dataset, monkeypatch, cpu_graphs, capsys):
    def capture(fn):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(train, "capture", capture)
    cfg = TrainConfig(epochs=1, batch_size=30, seed=0)
    eager, graphed = fit(tiny_model, cfg, dataset, False), fit(tiny_model, cfg, dataset, True)
    assert "CUDA graph capture failed (RuntimeError: operation not permitted" in capsys.readouterr().err
    assert_same_weights_and_history(eager, graphed)


def test_bench_times_both_loops_and_compares_them(tiny_model):
    import bench

    images = bench.synthetic_images(n=200)
    cpu = torch.device("cpu")
    configs = [bench.Config("original", 50, "fp32", "eager"), bench.Config("ours", 50, "fp32", "eager")]
    configs[0].runner = bench.OriginalLoop(images, 50, cpu, cfg=tiny_model)
    configs[1].runner = bench.OurLoop(images, 50, cpu, model_cfg=tiny_model)
    for c in configs:
        assert c.runner.steps(6) == 6  # 6 steps cross an epoch of 4 batches: both loops wrap around
        c.rounds = [bench.timed(c, 2, cpu)[0]]
    assert configs[1].runner.trainer.step == 6 + 2
    rows = bench.table(configs, cpu).splitlines()
    assert rows[3].split()[:2] == ["original", "50"] and rows[3].split()[6] == "1.00"
    assert rows[4].split()[:2] == ["ours", "50"]


def test_bench_quality_runs_parse_into_train_configs():
    import bench

    name, cfg = bench.parse_run(bench.FAST, epochs=7)
    assert name == "fast" and (cfg.batch_size, cfg.gen_lr, cfg.dis_lr, cfg.precision, cfg.epochs) == (
        1000, 1.9e-3, 2.5e-3, "bf16", 7)
    assert bench.parse_run("default", epochs=100)[1] == TrainConfig(epochs=100)
    with pytest.raises(SystemExit, match="batchsize is not a TrainConfig field"):
        bench.parse_run("typo:batchsize=5", epochs=1)
