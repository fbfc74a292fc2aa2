"""The three phases, seeded determinism and exact resume of train.Trainer."""

import io
import math
from dataclasses import replace

import pytest
import torch

import aae
import phases
import train
from data import to_float
from train import Interrupted, NonFiniteLoss, Trainer


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(before[k], v)}


def weight_names(module):
    return {k for k, _ in module.named_parameters()}


@pytest.fixture
def trainer(tiny_model, tiny_train):
    return Trainer(tiny_model, tiny_train, "cpu")


@pytest.fixture
def batch(dataset):
    return to_float(dataset.train.images[:50])


def all_snapshots(t):
    return [snapshot(m) for m in (t.model.encoder, t.model.decoder, t.model.discriminator)]


def test_reconstruction_phase_steps_encoder_and_decoder_only(trainer, batch):
    m = trainer.model
    enc, dec, dis = all_snapshots(trainer)
    loss = phases.reconstruction_phase(m.encoder, m.decoder, m.optimizers["reconstruction"], batch)
    assert loss.item() > 0
    assert changed(enc, m.encoder) == weight_names(m.encoder)
    assert changed(dec, m.decoder) == weight_names(m.decoder)
    assert changed(dis, m.discriminator) == set()


def test_discriminator_phase_steps_discriminator_only(trainer, batch):
    m = trainer.model
    enc, dec, dis = all_snapshots(trainer)
    z_prior = m.sample_prior(len(batch))
    loss, acc = phases.discriminator_phase(m.encoder, m.discriminator, m.optimizers["discriminator"], batch, z_prior)
    assert 0 <= acc.item() <= 1 and loss.item() > 0
    assert changed(enc, m.encoder) == set()
    assert changed(dec, m.decoder) == set()
    assert changed(dis, m.discriminator) == weight_names(m.discriminator)
    assert all(p.grad is None for p in m.encoder.parameters())  # codes were detached


def test_generator_phase_steps_encoder_only(trainer, batch):
    m = trainer.model
    enc, dec, dis = all_snapshots(trainer)
    phases.generator_phase(m.encoder, m.discriminator, m.optimizers["generator"], batch)
    assert changed(enc, m.encoder) == weight_names(m.encoder)
    assert changed(dec, m.decoder) == set()
    assert changed(dis, m.discriminator) == set()
    assert all(p.grad is None for p in m.discriminator.parameters())  # frozen, not merely unstepped
    assert all(p.requires_grad for p in m.discriminator.parameters())  # and unfrozen afterwards


def test_shared_codes_make_the_same_adversarial_steps_as_the_phases_own(tiny_model, tiny_train, batch):
    """The plain AAE's step computes the codes once for both adversarial phases; with the same dropout masks
    that is what each phase does on its own: the same discriminator step, the same encoder step."""
    shared, alone = Trainer(tiny_model, tiny_train, "cpu").model, Trainer(tiny_model, tiny_train, "cpu").model
    z_prior = shared.sample_prior(len(batch))
    torch.manual_seed(5)  # the same masks: the encoder's, then the discriminator's, in both
    codes = shared.encoder(batch)
    d_shared = phases.discriminator_phase(None, shared.discriminator, shared.optimizers["discriminator"], batch,
                                          z_prior, codes=codes)
    torch.manual_seed(5)
    d_alone = phases.discriminator_phase(alone.encoder, alone.discriminator, alone.optimizers["discriminator"], batch,
                                         z_prior)
    assert [t.item() for t in d_shared] == [t.item() for t in d_alone]
    assert changed(snapshot(alone.discriminator), shared.discriminator) == set()
    torch.manual_seed(6)  # the generator phase sees the codes of the shared forward: as if computed now
    g_shared = phases.generator_phase(None, shared.discriminator, shared.optimizers["generator"], batch,
                                      codes=shared.encoder(batch))
    torch.manual_seed(6)
    g_alone = phases.generator_phase(alone.encoder, alone.discriminator, alone.optimizers["generator"], batch)
    assert g_shared.item() == g_alone.item()
    assert changed(snapshot(alone.encoder), shared.encoder) == set()


def test_generator_phase_pushes_codes_towards_what_discriminator_calls_prior(trainer, batch):
    m = trainer.model
    m.encoder.eval(), m.discriminator.eval()  # no dropout: compare like with like
    before = m.discriminator(m.encoder(batch)).mean().item()
    for _ in range(5):
        phases.generator_phase(m.encoder, m.discriminator, m.optimizers["generator"], batch)
    after = m.discriminator(m.encoder(batch)).mean().item()
    assert after > before


def run(tiny_model, cfg, dataset, **kwargs):
    t = Trainer(tiny_model, cfg, "cpu")
    t.fit(dataset, log=lambda line: None, **kwargs)
    return t


def assert_same_run(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    for name in ("encoder", "decoder", "discriminator"):
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), f"{name}.{k} differs"
    for name, opt in sa["optimizers"].items():
        for pid, state in opt["state"].items():
            for k, v in state.items():
                assert torch.equal(v, sb["optimizers"][name]["state"][pid][k]), f"{name} optimiser {pid}.{k}"
        assert [g["lr"] for g in opt["param_groups"]] == [g["lr"] for g in sb["optimizers"][name]["param_groups"]]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    assert a.step == b.step and a.epoch == b.epoch
    assert torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    assert torch.equal(sa["rng"]["prior"], sb["rng"]["prior"])


def test_two_seeded_runs_are_identical(tiny_model, tiny_train, dataset):
    assert_same_run(run(tiny_model, tiny_train, dataset), run(tiny_model, tiny_train, dataset))


def test_another_seed_gives_another_run(tiny_model, tiny_train, dataset):
    a = run(tiny_model, tiny_train, dataset)
    b = run(tiny_model, replace(tiny_train, seed=1), dataset)
    assert not torch.equal(a.model.encoder.net[0].weight, b.model.encoder.net[0].weight)


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_train_save_resume_equals_uninterrupted(tiny_model, tiny_train, dataset):
    full = run(tiny_model, replace(tiny_train, epochs=4), dataset)
    first = run(tiny_model, replace(tiny_train, epochs=2), dataset)
    ckpt = roundtrip(first.state_dict())
    torch.manual_seed(1234)  # the global RNG must come back from the checkpoint, not from here
    resumed = Trainer(tiny_model, replace(tiny_train, epochs=4), "cpu")
    resumed.load_state_dict(ckpt)
    resumed.fit(dataset, log=lambda line: None)
    assert_same_run(full, resumed)


@pytest.mark.parametrize("lr_decay", ["none", "cosine"])
def test_interrupt_mid_epoch_resumes_exactly(tiny_model, tiny_train, dataset, lr_decay):
    cfg = replace(tiny_train, epochs=3, lr_decay=lr_decay)
    full = run(tiny_model, cfg, dataset)
    saved = []
    t = Trainer(tiny_model, cfg, "cpu")
    with pytest.raises(Interrupted):  # stop after the 5th step: in the middle of epoch 2 (4 steps/epoch)
        t.fit(dataset, log=lambda line: None, save=lambda tr: saved.append(roundtrip(tr.state_dict())),
              should_stop=lambda: t.step >= 5)
    ckpt = saved[-1]
    assert ckpt["epoch"] == 1 and ckpt["partial_epoch"]["step_in_epoch"] == 1
    resumed = Trainer(tiny_model, cfg, "cpu")
    resumed.load_state_dict(ckpt)
    resumed.fit(dataset, log=lambda line: None)
    assert_same_run(full, resumed)


def test_history_has_every_phase_and_test_reconstruction(tiny_model, tiny_train, dataset):
    lines = []
    t = Trainer(tiny_model, tiny_train, "cpu")
    t.fit(dataset, log=lines.append)
    assert len(t.history) == 2 and len(lines) == 2
    for row in t.history:
        for key in train.LOG_COLUMNS:
            assert math.isfinite(row[key]), key
        assert 0 <= row["disc_accuracy"] <= 1
    assert "recon" in lines[0] and "disc" in lines[0] and "gen" in lines[0] and "test_recon" in lines[0]


def test_training_improves_test_reconstruction(tiny_model, dataset):
    from train import TrainConfig

    cfg = TrainConfig(epochs=15, batch_size=20, seed=0)
    t = Trainer(tiny_model, cfg, "cpu")
    untrained = t.model.test_reconstruction(dataset.test.images)
    t.fit(dataset, log=lambda line: None)
    assert t.history[-1]["test_recon_bce"] < 0.8 * untrained


def test_non_finite_loss_names_phase_and_epoch(tiny_model, tiny_train, dataset, monkeypatch):
    real = phases.generator_phase
    monkeypatch.setattr(aae, "generator_phase", lambda *a, **k: real(*a, **k) * float("nan"))  # the AAE's step
    saved = []
    t = Trainer(tiny_model, tiny_train, "cpu")
    with pytest.raises(NonFiniteLoss) as err:
        t.fit(dataset, log=lambda line: None, save=saved.append)
    assert err.value.phase == "generator" and err.value.epoch == 1
    assert saved == []  # the bad epoch was never saved over the last good checkpoint


def test_bf16_autocast_trains(tiny_model, tiny_train, dataset):
    t = Trainer(tiny_model, replace(tiny_train, epochs=1, precision="bf16"), "cpu")
    t.fit(dataset, log=lambda line: None)
    assert math.isfinite(t.history[0]["test_recon_bce"])
    assert t.model.encoder.net[0].weight.dtype == torch.float32  # weights stay fp32 under autocast


def test_cosine_factor_falls_from_one_to_near_zero():
    factors = [train.lr_factor("cosine", e, 30) for e in range(30)]
    assert factors[0] == 1.0 and factors[15] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(factors, factors[1:]))
    assert 0 < factors[-1] < 0.003
    assert {train.lr_factor("none", e, 30) for e in range(30)} == {1.0}
    with pytest.raises(ValueError, match="step"):
        train.lr_factor("step", 0, 30)


@pytest.mark.parametrize("lr_decay", ["none", "cosine"])
def test_every_optimiser_follows_the_schedule(tiny_model, tiny_train, dataset, lr_decay):
    cfg = replace(tiny_train, epochs=3, lr_decay=lr_decay, gen_lr=1e-3, dis_lr=3e-4)
    rates = []
    t = Trainer(tiny_model, cfg, "cpu")
    t.fit(dataset, log=lambda line: None,
          save=lambda tr: rates.append({n: o.param_groups[0]["lr"] for n, o in tr.model.optimizers.items()}))
    assert len(rates) == 3
    for epoch, seen in enumerate(rates):
        f = train.lr_factor(lr_decay, epoch, 3)
        assert seen == pytest.approx({"reconstruction": 1e-3 * f, "discriminator": 3e-4 * f, "generator": 3e-4 * f})
    assert t.model.optimizers["reconstruction"].param_groups[0]["initial_lr"] == 1e-3


def test_a_rate_held_as_a_tensor_is_written_in_place_and_saved_as_a_number(tiny_model, tiny_train):
    # what CUDA graphs need: the captured step reads the rate's memory. Fused Adam takes a tensor rate
    # on the CPU too, so the path is exercised here.
    t = Trainer(tiny_model, replace(tiny_train, epochs=4, lr_decay="cosine"), "cpu")
    group = t.model.optimizers["discriminator"].param_groups[0]
    group["lr"] = rate = torch.tensor(group["lr"])
    t.epoch = 2
    t.set_learning_rates()
    assert group["lr"] is rate and rate.item() == pytest.approx(t.cfg.dis_lr * train.lr_factor("cosine", 2, 4))
    saved = roundtrip(t.state_dict())["optimizers"]["discriminator"]["param_groups"][0]
    assert type(saved["lr"]) is float and saved["lr"] == pytest.approx(rate.item())


def test_a_step_with_tensor_rates_equals_one_with_number_rates(tiny_model, tiny_train, batch):
    def stepped(tensor_rates):
        t = Trainer(tiny_model, replace(tiny_train, epochs=4, lr_decay="cosine"), "cpu")  # reseeds: same masks
        for opt in t.model.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = torch.tensor(group["lr"]) if tensor_rates else group["lr"]
        t.epoch = 2
        t.set_learning_rates()
        rows = torch.arange(len(batch))  # batch is the first 50 training images
        t.model.step(batch, rows, t.model.draw(rows), torch.zeros(4, dtype=torch.float64))
        return t

    a, b = stepped(True), stepped(False)
    assert isinstance(a.model.optimizers["generator"].param_groups[0]["lr"], torch.Tensor)
    for name in ("encoder", "decoder", "discriminator"):
        for (k, v), w in zip(a.model.nets[name].state_dict().items(), b.model.nets[name].state_dict().values()):
            assert torch.equal(v, w), f"{name}.{k}"


def test_the_progress_bar_says_the_epoch_and_after_the_first_the_runs_time_left(tiny_model, tiny_train, dataset):
    """Each epoch's bar (commands.tqdm_progress on a terminal) is labelled with the run's time left, at the mean
    speed of the last five epochs."""
    labels = []

    class Bar:
        def __init__(self, total, initial, desc):
            labels.append(desc)

        def update(self, n):
            pass

        def close(self):
            pass

    t = Trainer(tiny_model, replace(tiny_train, epochs=3), "cpu")
    t.fit(dataset, log=lambda line: None, progress=Bar)
    assert labels[0] == "epoch 1/3"
    assert [label.split(",")[0] for label in labels] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    left = round(t.history[0]["seconds"] * 2)  # after epoch 1: two epochs at epoch 1's speed
    assert labels[1] == f"epoch 2/3, run {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
