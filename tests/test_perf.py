"""The speed-ups keep the training step's meaning: dropout as nn.Dropout's, shared codes, CUDA-graph steps as eager ones."""


import pytest
import torch
from torch import nn

import models
import train
from train import Trainer, TrainConfig


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.25, 0.2, 0.5])
def test_dropout_keeps_nn_dropouts_rate_scale_and_gradient(p, dtype):
    layer = models.Dropout(p)
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, dtype=dtype, requires_grad=True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.002  # 1e6 draws: sd 0.0005
    assert torch.equal(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # nn.Dropout's scale, in x's dtype
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    assert torch.equal(grad, y.detach())  # d(x * mask / keep) / dx = mask / keep, and x = 1
    assert not torch.equal(layer(x), y)  # fresh masks each call


def test_dropout_masks_follow_the_seed_and_are_independent_of_position():
    layer = models.Dropout(0.25)
    x = torch.ones(3, 40000)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), a)
    # no element's mask is tied to its neighbour's (four uniforms come from each 64-bit word)
    kept = (a != 0).float().flatten()
    both = (kept[:-1] * kept[1:]).mean().item()
    assert abs(both - 0.75**2) < 0.01


def test_dropout_is_identity_in_eval_mode():
    layer = models.Dropout(0.25).eval()
    x = torch.randn(8, 10)
    assert torch.equal(layer(x), x)


needs_onednn = pytest.mark.skipif(not models.onednn_available(), reason="this torch build has no oneDNN")


def linear_pair(n_in=100, n_out=80):
    torch.manual_seed(0)
    layer, reference = models.Linear(n_in, n_out), nn.Linear(n_in, n_out)
    reference.load_state_dict(layer.state_dict())  # the same parameters under the same names
    return layer, reference


@needs_onednn
def test_onednn_linear_computes_nn_linears_output_and_gradients():
    layer, reference = linear_pair()
    x = torch.randn(7, 100, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = layer(x), reference(x_ref)
    assert type(y.grad_fn).__name__ == "_OneDNNLinearBackward"  # oneDNN's path, not autograd's addmm
    torch.testing.assert_close(y, y_ref)
    grad = torch.randn_like(y)
    y.backward(grad), y_ref.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)
    torch.testing.assert_close(layer.bias.grad, reference.bias.grad)


@needs_onednn
def test_onednn_linear_leaves_frozen_weights_and_data_without_gradients():
    layer, reference = linear_pair()
    layer.requires_grad_(False), reference.requires_grad_(False)  # the generator phase's discriminator
    x = torch.randn(7, 100, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    layer(x).square().sum().backward(), reference(x_ref).square().sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None
    torch.testing.assert_close(x.grad, x_ref.grad)
    layer.requires_grad_(True)
    data = torch.randn(7, 100)  # images: no gradient wanted
    layer(data).sum().backward()
    assert data.grad is None and layer.weight.grad is not None


def test_linear_is_nn_linear_under_autocast_when_narrow_and_when_switched_off():
    layer, reference = linear_pair()
    x = torch.randn(7, 100)
    assert layer.uses_onednn(x) == models.onednn_available()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        assert y.dtype == torch.bfloat16 and torch.equal(y, reference(x))
    code_layer, code_reference = linear_pair(100, 8)  # narrower than ONEDNN_MIN_WIDTH
    assert not code_layer.uses_onednn(x) and torch.equal(code_layer(x), code_reference(x))
    models.use_onednn(layer, False)
    assert not layer.uses_onednn(x) and torch.equal(layer(x), reference(x))


def fit(model_cfg, cfg, dataset, graphs):
    t = Trainer(model_cfg, cfg, "cpu")
    t.cuda_graphs = graphs
    t.fit(dataset, log=lambda line: None)
    return t


def assert_same_weights_and_history(a, b):
    for name in ("encoder", "decoder", "discriminator"):
        for key, value in a.model.nets[name].state_dict().items():
            assert torch.equal(value, b.model.nets[name].state_dict()[key]), f"{name}.{key}"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert torch.equal(a.model.prior_rng.get_state(), b.model.prior_rng.get_state())


@needs_onednn
def test_training_through_onednn_is_reproducible_and_follows_torchs_own_products(tiny_model, dataset, monkeypatch):
    monkeypatch.setattr(models, "ONEDNN_MIN_WIDTH", 1)  # the tiny model's 32-wide layers too
    cfg = TrainConfig(epochs=1, batch_size=30, seed=0)
    first, second = fit(tiny_model, cfg, dataset, False), fit(tiny_model, cfg, dataset, False)
    assert_same_weights_and_history(first, second)  # bit-identical, as a seeded run must be
    monkeypatch.setattr(models.Linear, "onednn", False)  # every layer: torch's own products
    blas = fit(tiny_model, cfg, dataset, False)
    for key in ("recon_loss", "disc_loss", "gen_loss"):
        assert first.history[0][key] == pytest.approx(blas.history[0][key], rel=1e-4)
    first_encoder, blas_encoder = first.model.encoder.state_dict(), blas.model.encoder.state_dict()
    for key, value in first_encoder.items():  # 7 Adam steps of 6e-4 apart at most, far less here
        torch.testing.assert_close(value, blas_encoder[key], atol=1e-3, rtol=0)
    assert not all(torch.equal(v, blas_encoder[k]) for k, v in first_encoder.items())


def test_graphed_step_plumbing_trains_as_eager_steps_do(tiny_model, dataset, cpu_graphs):
    """GraphedStep's plumbing only: the stand-in reruns the Python step at each replay, so a real graph that kept
    reading the buffers it was captured with would pass here (test_cuda_graph_replays_train_as_eager_steps_do)."""
    cfg = TrainConfig(epochs=2, batch_size=30, seed=0)  # 200 images: 6 full batches and one of 20, an epoch
    eager, graphed = fit(tiny_model, cfg, dataset, False), fit(tiny_model, cfg, dataset, True)
    assert len(cpu_graphs) == 1 and graphed._graphed.graph is cpu_graphs[0]  # captured once, then replayed
    assert_same_weights_and_history(eager, graphed)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_replays_train_as_eager_steps_do(tiny_model, dataset):
    """A real captured graph: each replay must read the batch's indices and prior draws copied into its buffers."""
    cfg = TrainConfig(epochs=8, batch_size=50, seed=0)  # 200 images: 4 full batches an epoch, 32 steps
    runs = []
    for graphs in (False, True):  # each built right before it trains: Trainer seeds the global (dropout) RNG
        runs.append(Trainer(tiny_model, cfg, "cuda", cuda_graphs=graphs))
        runs[-1].fit(dataset, log=lambda line: None)
    eager, graphed = runs
    assert graphed._graphed.failed is None and graphed._graphed.graph is not None  # 3 eager steps, 29 replays
    # Exact: the same kernels on the same inputs (bit-identical on an H200, bench.py --device cuda). No tolerance
    # would help: a rounding difference grows through Adam into lr-sized steps, as large as a stale buffer's.
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
    assert all(c.rounds[0] > 0 for c in configs)
    # made-up rounds (steps/s) with known quotients: the original's ratio to itself, 1.00, passed an inverted ratio
    configs[0].rounds, configs[1].rounds = [2.0, 4.0, 3.0], [5.0, 8.0, 20.0]  # median and best: 3, 4 and 8, 20
    rows = bench.table(configs, cpu).splitlines()
    # samples/s = 50 x steps/s, s/epoch = 60,000 / samples/s, x orig. = ours / original: 400 / 150, 1000 / 200
    assert rows[3].split() == ["original", "50", "fp32", "eager", "150", "400.0", "1.00", "200", "300.0", "1.00", "--"]
    assert rows[4].split() == ["ours", "50", "fp32", "eager", "400", "150.0", "2.67", "1,000", "60.0", "5.00", "--"]


@needs_onednn
def test_bench_blas_rows_train_without_onednn_and_leave_the_switch_as_it_was(tiny_model, monkeypatch):
    import bench

    monkeypatch.setattr(models, "ONEDNN_MIN_WIDTH", 1)  # the tiny model's layers too
    calls = []
    apply = models._OneDNNLinear.apply
    monkeypatch.setattr(models._OneDNNLinear, "apply", lambda *args: calls.append(1) or apply(*args))
    images, cpu = bench.synthetic_images(n=100), torch.device("cpu")
    blas = bench.build(bench.Config("ours", 50, "fp32", "blas"), images, cpu)
    assert linears(blas) and not any(layer.onednn for layer in linears(blas))
    bench.OurLoop(images, 50, cpu, model_cfg=tiny_model, onednn=False).steps(2)
    assert calls == [] and models.Linear.onednn is True
    ours = bench.OurLoop(images, 50, cpu, model_cfg=tiny_model)
    assert all(layer.onednn for layer in linears(ours))
    ours.steps(2)
    assert calls


def linears(loop):
    """Every models.Linear of a bench loop's model."""
    return [m for net in loop.trainer.model.nets.values() for m in net.modules() if isinstance(m, models.Linear)]


def test_bench_quality_runs_parse_into_train_configs():
    import bench

    name, cfg = bench.parse_run(bench.FAST, epochs=7)
    assert name == "fast" and (cfg.batch_size, cfg.gen_lr, cfg.dis_lr, cfg.precision, cfg.epochs, cfg.lr_decay) == (
        100, 6e-4, 2e-4, "bf16", 38, "cosine")  # its own epochs, not the default's
    assert bench.parse_run("original:dis_lr=8e-4", epochs=7)[1] == TrainConfig(epochs=7, dis_lr=8e-4)
    assert bench.parse_run("default", epochs=100)[1] == TrainConfig(epochs=100)
    with pytest.raises(SystemExit, match="batchsize is not a TrainConfig field"):
        bench.parse_run("typo:batchsize=5", epochs=1)


def test_bench_profile_lists_the_matrix_products_by_shape():
    import bench
    from torch.profiler import profile

    a, b, bias = torch.rand(30, 20), torch.rand(20, 10), torch.rand(10)
    onednn = models.onednn_available()
    with profile(record_shapes=True) as p:
        for _ in range(2):  # two "steps", each of two products and one product with a bias
            a @ b, a @ b, torch.addmm(bias, a, b)
            if onednn:  # models.Linear's products, x [30, 20] by a weight [10, 20], with and without a bias
                models._onednn_product(a, b.t().contiguous(), bias), models._onednn_product(a, b.t())
        torch.rand(5, 5) * 2  # not a matrix product
    text = bench.matrix_products(p.key_averages(group_by_input_shape=True), steps=2, peak=123.4)
    lines = [line for line in text.splitlines() if line.startswith(("mm", "addmm", "onednn", "all"))]
    rows = {line[:34].strip(): line[34:].split() for line in lines}  # name, then calls, ms, GFLOP/s, share
    expected = {"mm     [30, 20] x [20, 10]", "addmm  [30, 20] x [20, 10]", "all"}
    assert set(rows) == expected | ({"onednn [30, 20] x [20, 10]"} if onednn else set())
    assert rows["mm     [30, 20] x [20, 10]"][0] == "2" and rows["addmm  [30, 20] x [20, 10]"][0] == "1"
    assert not onednn or rows["onednn [30, 20] x [20, 10]"][0] == "2"  # one row for both
    shares = [float(r[3].rstrip("%")) for name, r in rows.items() if name != "all"]
    assert abs(sum(shares) - 100) < 0.2
    assert "a 2000 x 2000 product runs at 123 GFLOP/s here" in text
