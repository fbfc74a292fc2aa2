"""The paper's other models (aae.py, categorical.py, phases.py): which labels are read, each model's training,
numbers, pictures and exact resume, the extra phases, and the command line."""

import io
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import aae
import categorical
import commands
import data
import main
import models
import phases
import priors
import utils
import variants
from data import to_float
from models import ModelConfig
from train import Interrupted, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent

# name: (ModelConfig fields, TrainConfig fields, the number it reports, its picture)
CASES = {
    "supervised": ({"mode": "supervised"}, {}, "knn_accuracy", "supervised_styles.png"),
    "semi_supervised": ({"mode": "semi_supervised"}, {"labels": 20}, "test_error", "semi_supervised_styles.png"),
    "clustering": ({"mode": "clustering", "clusters": 12}, {}, "test_cluster_error", "clustering_clusters.png"),
    "semi_supervised_augmented": ({"mode": "semi_supervised"}, {"labels": 20, "augment": 2, "consistency_weight": 1.0},
                                  "test_error", "semi_supervised_styles.png"),
    "dim_reduction": ({"mode": "dim_reduction"}, {"labels": 20}, "test_error", "dim_reduction_codes.png"),
    "dim_reduction_unlabelled": ({"mode": "dim_reduction", "clusters": 12}, {"labels": 0}, "test_cluster_error",
                                 "dim_reduction_clusters.png"),
    "label_discriminator_mixture": ({"label_discriminator": True}, {"prior": "mixture", "labels": 50},
                                    "label_part_accuracy", "latent_codes.png"),
    "label_discriminator_swiss_roll": ({"label_discriminator": True}, {"prior": "swiss_roll"},
                                       "label_part_accuracy", "latent_codes.png"),
    "uniform_prior_gaussian_encoder": ({"encoder": "gaussian"}, {"prior": "uniform"}, "mmd_to_prior",
                                       "latent_codes.png"),
}


def configs(case, **train_fields):
    model_fields, train_extra, _, _ = CASES[case]
    model_cfg = ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32, **model_fields)
    # the discriminators' rate the models were tuned and measured at (README), not the plain AAE's default
    fields = {"epochs": 2, "batch_size": 50, "seed": 0, "dis_lr": 8e-4, **train_extra, **train_fields}
    return model_cfg, TrainConfig(**fields)


def fit(trainer, dataset, **kwargs):
    trainer.fit(dataset, log=lambda line: None, **kwargs)
    return trainer


def roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_same_state(a, b):
    """Two trainers' checkpoints hold equal tensors everywhere, and equal histories (seconds aside)."""
    sa, sb = roundtrip(a.state_dict()), roundtrip(b.state_dict())

    def equal(x, y, where):
        if isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                equal(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                equal(u, v, f"{where}[{i}]")
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif where.endswith(".seconds"):
            pass
        else:
            assert x == y, where

    equal(sa, sb, "checkpoint")


def one_step(model, x, rows):
    """One step of the model's phases on the batch x (the training images `rows`); returns the column sums."""
    sums = torch.zeros(len(model.columns), dtype=torch.float64)
    model.step(x, rows, model.draw(rows), sums)
    return sums


# -- which labels are read ------------------------------------------------------------------------


def test_select_labels_is_balanced_seeded_and_masks_the_rest(dataset):
    labels = dataset.train.labels
    chosen = aae.select_labels(labels, 30, 10, seed=0)
    kept = chosen >= 0
    assert kept.sum() == 30 and (chosen[~kept] == -1).all()
    assert torch.equal(chosen[kept], labels[kept])
    assert torch.bincount(chosen[kept], minlength=10).tolist() == [3] * 10
    assert torch.equal(chosen, aae.select_labels(labels, 30, 10, seed=0))
    assert not torch.equal(chosen, aae.select_labels(labels, 30, 10, seed=1))
    uneven = aae.select_labels(labels, 25, 10, seed=0)
    assert torch.bincount(uneven[uneven >= 0], minlength=10).tolist() == [3] * 5 + [2] * 5
    assert torch.equal(aae.select_labels(labels, -1, 10, 0), labels)
    assert (aae.select_labels(labels, 0, 10, 0) == -1).all()


def test_select_labels_refuses_more_than_there_are(dataset):
    with pytest.raises(ValueError, match="class 0 has only 5 training examples, 10 wanted"):
        aae.select_labels(torch.tensor([0] * 5 + [1] * 20), 20, 2, seed=0)
    with pytest.raises(ValueError, match="has only 200 examples"):
        aae.select_labels(dataset.train.labels, 201, 10, seed=0)


def given_only(model_cfg, train_cfg, labels):
    """A trainer whose model holds `labels` (select_labels' form) and was never shown the training split's."""
    trainer = Trainer(model_cfg, train_cfg, "cpu")
    trainer.model.labels = labels
    return trainer


@pytest.mark.parametrize("case", ["semi_supervised", "dim_reduction", "label_discriminator_mixture"])
def test_training_reads_no_training_label_outside_the_labelled_subset(case, dataset):
    model_cfg, train_cfg = configs(case)
    chosen = aae.select_labels(dataset.train.labels, train_cfg.labels, 10, train_cfg.seed)
    honest = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels)
    assert torch.equal(honest.model.labels, chosen)  # all the model keeps of the labels it is given
    fit(honest, dataset)
    # The dataset's training labels are gone, and the model was only ever handed the chosen ones:
    # any read of another training label would raise, or change the run.
    blind = replace(dataset, train=data.Split(dataset.train.images, None))
    assert_same_state(honest, fit(given_only(model_cfg, train_cfg, chosen.clone()), blind))
    # The labels it is given are read: one changed label changes the run.
    flipped = chosen.clone()
    first = (chosen >= 0).nonzero()[0, 0]
    flipped[first] = (chosen[first] + 1) % 10
    other = fit(given_only(model_cfg, train_cfg, flipped), dataset)
    assert not torch.equal(other.model.encoder.net[0].weight, honest.model.encoder.net[0].weight)


def test_plain_configs_get_the_plain_model(tiny_model, tiny_train, dataset):
    trainer = Trainer(tiny_model, tiny_train, "cpu", dataset.train.labels)
    assert type(trainer.model) is aae.AAE and trainer.model.labels is None  # it reads no label


# -- each model trains, and reports its number and picture ----------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_each_model_trains_and_gives_its_number_and_picture(case, dataset, tmp_path):
    model_cfg, train_cfg = configs(case)
    trainer = fit(Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels), dataset)
    model = trainer.model
    for row in trainer.history:
        assert all(math.isfinite(v) for v in row.values())
        for column in model.columns:
            assert column in row
    assert model.own_numbers()  # so training writes them into mode_metrics.json
    model.eval()  # as training leaves it before its numbers and pictures
    numbers, pictures = commands.write_numbers(model, dataset, tmp_path)
    number, picture = CASES[case][2], CASES[case][3]
    saved = json.loads((tmp_path / commands.NUMBERS_NAME).read_text())
    assert saved == numbers and saved["mode"] == model_cfg.mode and saved["epochs"] == 2
    assert 0 <= saved[number] <= 1 or number == "mmd_to_prior" and math.isfinite(saved[number])
    # 8 steps of 32-unit nets: near the 543 nats of an all-grey image at best; a broken decoder gives thousands
    assert 0 < saved["test_recon_bce"] < 1000
    assert picture in saved["pictures"] and (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
    assert {p.name for p in pictures} == set(saved["pictures"])
    assert set(saved["pictures"]) | {commands.NUMBERS_NAME} == {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize("case", CASES)
def test_each_model_resumes_exactly_after_an_interruption(case, dataset):
    model_cfg, train_cfg = configs(case, epochs=3)
    labels = dataset.train.labels
    full = fit(Trainer(model_cfg, train_cfg, "cpu", labels), dataset)
    saved = []
    t = Trainer(model_cfg, train_cfg, "cpu", labels)
    with pytest.raises(Interrupted):  # after the 5th step: inside epoch 2 (4 steps an epoch)
        fit(t, dataset, save=lambda tr: saved.append(roundtrip(tr.state_dict())), should_stop=lambda: t.step >= 5)
    assert saved[-1]["partial_epoch"]["step_in_epoch"] == 1
    torch.manual_seed(1234)  # the global RNG must come back from the checkpoint
    resumed = Trainer(model_cfg, train_cfg, "cpu", labels)
    resumed.load_state_dict(saved[-1])
    assert_same_state(full, fit(resumed, dataset))


@pytest.mark.parametrize("case", ["dim_reduction", "supervised"])
def test_load_models_rebuilds_a_model(case, dataset, tmp_path):
    model_cfg, train_cfg = configs(case)
    trainer = fit(Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels), dataset)
    utils.save_checkpoint(trainer.state_dict(), tmp_path / "aae.pt")
    loaded = utils.load_models(tmp_path)
    assert type(loaded) is type(trainer.model) and loaded.nets.keys() == trainer.model.nets.keys()
    # in eval mode: dropout off, the same codes on every call
    assert not any(net.training for net in loaded.nets.values())
    x = to_float(dataset.test.images[:10])
    trainer.model.encoder.eval(), trainer.model.decoder.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), trainer.model.encoder(x))
    assert torch.equal(loaded.discriminator.net[0].weight, trainer.model.discriminator.net[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(loaded.decoder.parameters(), trainer.model.decoder.parameters()))
    for name, net in trainer.model.nets.items():  # discriminator_y too
        assert all(torch.equal(a, b) for a, b in zip(loaded.nets[name].parameters(), net.parameters())), name


def test_predictions_and_codes_read_uint8_or_float_images_alike(dataset):
    # the README hands predict_category the float images that utils.load_models' networks take
    model_cfg, train_cfg = configs("clustering", epochs=1)
    model = fit(Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels), dataset).model
    stored = dataset.test.images[:60]  # uint8 [N, 28, 28]
    floats = to_float(stored)  # [N, 1, 28, 28] in [0, 1]
    codes = model.style(stored)
    assert codes.shape == (60, 2) and codes.std() > 0
    for x in (floats, floats.flatten(1)):
        assert torch.equal(model.predict_category(x), model.predict_category(stored))
        assert torch.equal(model.style(x), codes)


def test_load_models_reads_supervised_and_categorical_checkpoints(dataset, tmp_path):
    # load_models now reads every checkpoint (it used to refuse a categorical one, pointing to modes.load_trainer)
    trainers = {}
    for case in ("supervised", "clustering"):
        model_cfg, train_cfg = configs(case, epochs=1)
        trainers[case] = fit(Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels), dataset)
        (tmp_path / case).mkdir()
        utils.save_checkpoint(trainers[case].state_dict(), tmp_path / case / "aae.pt")
    trained = utils.load_models(tmp_path / "supervised")  # its decoder and discriminator also read the label
    assert trained.decoder.net[0].in_features == trained.discriminator.net[0].in_features == 2 + 10
    clustering = utils.load_models(tmp_path / "clustering")
    assert type(clustering) is variants.VARIANTS["clustering"] and not clustering.encoder.training
    trainers["clustering"].model.eval()
    assert torch.equal(clustering.predict_category(dataset.test.images),
                       trainers["clustering"].model.predict_category(dataset.test.images))


def test_semi_supervised_learns_to_classify_from_few_labels(dataset):
    model_cfg, train_cfg = configs("semi_supervised", epochs=8, labels=50)
    trainer = fit(Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels), dataset)
    errors = [row["test_error"] for row in trainer.history]
    assert errors[-1] < 0.5 and errors[-1] < errors[0]  # chance is 0.9


# -- each number's known answer: encoders that read the label an image shows -------------------------


# Images of class c have every pixel at 20 * c, so a stub can read the class an image shows; 9 or 10
# training images a class, so that 5-NN on codes placed by class finds that class.
TRAIN_LABELS = torch.tensor([0] * 10 + [1] * 9 + [2] * 10 + [3] * 9)
TEST_LABELS = torch.tensor([0, 1, 2, 3])


def showing(classes):
    return (20 * classes).to(torch.uint8)[:, None, None].expand(-1, 28, 28).contiguous()


def shown(images):
    """The class a uint8 image of `showing` shows."""
    return images.flatten(1)[:, 0].long() // 20


def mixture_centres():
    """Each mixture component's mean, from draws: the point of the prior that is surely its label's part."""
    index = torch.arange(10000) % 10
    draws = priors.sample("mixture", len(index), 2, generator=torch.Generator().manual_seed(1), index=index)
    return torch.stack([draws[index == k].mean(0) for k in range(10)])


# case: (ModelConfig fields, TrainConfig fields, numbers that are the share of test images named right,
# numbers that are the share named wrong)
KNOWN = {
    "semi_supervised": ({"mode": "semi_supervised"}, {}, ("style_knn_accuracy",), ("test_error",)),
    "clustering": ({"mode": "clustering", "clusters": 12}, {}, ("style_knn_accuracy",),
                   ("test_cluster_error", "test_cluster_error_exemplar")),
    "dim_reduction": ({"mode": "dim_reduction"}, {}, ("knn_accuracy_2d", "style_knn_accuracy"), ("test_error",)),
    "supervised": ({"mode": "supervised"}, {}, ("knn_accuracy",), ()),
    "label_discriminator": ({"label_discriminator": True}, {"prior": "mixture"}, ("label_part_accuracy", "knn_accuracy"),
                            ()),
}


@pytest.mark.parametrize("seen, right", [([0, 1, 2, 3], 1.0), ([0, 0, 3, 2], 0.25)])
@pytest.mark.parametrize("case", KNOWN)
def test_numbers_give_known_answers_for_encoders_that_read_the_label_an_image_shows(case, seen, right,
                                                                                     monkeypatch):
    # The [0, 1] range checks above pass an error reported as an accuracy; 0.25 right is 0.75 wrong, not 0.25.
    dataset = data.Dataset("known", data.Split(showing(TRAIN_LABELS), TRAIN_LABELS),
                           data.Split(showing(torch.tensor(seen)), TEST_LABELS))
    model_fields, train_fields, accuracies, errors = KNOWN[case]
    model_cfg = ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32, **model_fields)
    model = Trainer(model_cfg, TrainConfig(batch_size=50, seed=0, **train_fields), "cpu", TRAIN_LABELS).model
    # codes, and dim_reduction's W y + z, 3 apart by class shown
    place = lambda images: torch.stack([3.0 * shown(images), torch.zeros(len(images))], 1)  # noqa: E731
    if isinstance(model, categorical.CategoricalAAE):
        k = model.n_categories
        # clustering: cluster (c + 5) mod k holds class c, so a cluster is named by its training majority, not its number
        category = (lambda c: (c + 5) % k) if not model.reads_labels() else (lambda c: c)
        monkeypatch.setattr(model, "predict_category", lambda images: category(shown(images)))
        monkeypatch.setattr(model, "category_probabilities",
                            lambda images: torch.nn.functional.one_hot(category(shown(images)), k).float())
        monkeypatch.setattr(model, "style", place)
        if case == "dim_reduction":
            monkeypatch.setattr(model, "representation", place)
    elif model_cfg.label_discriminator:  # codes at the centre of the mixture component of the class shown
        monkeypatch.setattr(model, "encode", lambda images, labels=None: mixture_centres()[shown(images)])
    else:
        monkeypatch.setattr(model, "encode", lambda images, labels=None: place(images))
    numbers = model.numbers(dataset)
    assert {name: numbers[name] for name in accuracies + errors} == {
        **{name: right for name in accuracies}, **{name: 1 - right for name in errors}}
    if case == "clustering":
        assert numbers["clusters_used"] == len(set(seen))


# -- the extra phases ------------------------------------------------------------------------------


def snapshots(*modules):
    return [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]


def unchanged(before, module):
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_classification_phase_steps_the_encoder_only(dataset):
    model_cfg, train_cfg = configs("semi_supervised")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    nets = (t.encoder, t.decoder, t.discriminator, t.nets["discriminator_y"])
    before = snapshots(*nets)
    x, y = to_float(dataset.train.images[:50]), dataset.train.labels[:50]
    losses = [phases.classification_phase(t.encoder, t.optimizers["classification"], x, y).item() for _ in range(20)]
    assert losses[-1] < losses[0]
    assert not unchanged(before[0], t.encoder)
    assert all(unchanged(b, m) for b, m in zip(before[1:], nets[1:]))


def test_cluster_head_phase_pushes_close_heads_apart_and_touches_nothing_else(dataset):
    model_cfg, train_cfg = configs("dim_reduction")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    with torch.no_grad():
        t.decoder.heads[1] = t.decoder.heads[0] + 0.1
    before = snapshots(t.encoder, t.decoder.decoder)
    gap = (t.decoder.heads[1] - t.decoder.heads[0]).norm().item()
    for _ in range(10):
        phases.cluster_head_phase(t.decoder, t.optimizers["cluster_heads"], categorical.HEAD_MARGIN)
    assert (t.decoder.heads[1] - t.decoder.heads[0]).norm().item() > gap
    assert unchanged(before[0], t.encoder) and unchanged(before[1], t.decoder.decoder)


def test_straight_through_is_a_one_hot_with_the_softmax_gradient():
    logits = torch.randn(6, 5, requires_grad=True)
    y = models.straight_through(logits.softmax(1))
    assert torch.allclose(y.detach(), torch.nn.functional.one_hot(logits.argmax(1), 5).float(), atol=1e-6)
    weights = torch.randn(6, 5)
    (y * weights).sum().backward()
    expected = torch.autograd.grad((logits.softmax(1) * weights).sum(), logits)[0]
    assert torch.allclose(logits.grad, expected)


def collapsed_encoder(dataset):
    """A clustering model whose category head sends every image to category 0."""
    model_cfg, train_cfg = configs("clustering")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    with torch.no_grad():
        t.encoder.net[-1].bias[0] += 4.0
    return t


def batch_entropy(encoder, x):
    with torch.no_grad():
        return float(phases.entropy(encoder.category(x).mean(0)))


def test_balance_term_spreads_a_batch_gathered_in_one_category(dataset):
    x = to_float(dataset.train.images[:100])
    after = {}
    for balance in (0.0, TrainConfig.balance_weight):
        t = collapsed_encoder(dataset)
        assert batch_entropy(t.encoder, x) < 1.0
        for _ in range(30):
            phases.category_generator_phase(t.encoder, t.nets["discriminator_y"], t.optimizers["generator_y"], x,
                                            balance=balance)
        after[balance] = batch_entropy(t.encoder, x)
    # log 12 = 2.48 is an even spread; the untrained discriminator alone got 0.1 to 1.9 (seeds 0-3)
    assert after[TrainConfig.balance_weight] > max(math.log(12) - 0.2, after[0.0]), after


def test_confidence_term_makes_each_image_sure_of_its_category(dataset):
    x = to_float(dataset.train.images[:100])
    sureness = {}
    for confidence in (0.0, 1.0):
        model_cfg, train_cfg = configs("clustering")
        t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
        for _ in range(30):
            phases.category_generator_phase(t.encoder, t.nets["discriminator_y"], t.optimizers["generator_y"], x,
                                            confidence=confidence)
        with aae.evaluating(t.encoder):
            probs = t.encoder.category(x)
        sureness[confidence] = (probs.max(1).values.mean().item(), batch_entropy(t.encoder, x))
    # mean max probability of 12 categories: 0.09 without; with, 0.19 to 0.54 in seeds 0-3
    assert sureness[1.0][0] > 2 * sureness[0.0][0], sureness
    assert sureness[1.0][1] > math.log(4)  # the batch is still spread over several categories (balance term)


def test_translate_moves_each_image_by_its_own_shift_and_fills_with_zeros():
    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5).repeat(3, 1, 1, 1)
    moved = data.translate(x, torch.tensor([[0, 0], [1, 0], [0, -2]]), 2)
    assert torch.equal(moved[0], x[0])
    assert torch.equal(moved[1, 0, 1:], x[1, 0, :-1]) and not moved[1, 0, 0].any()  # down one row
    assert torch.equal(moved[2, 0, :, :-2], x[2, 0, :, 2:]) and not moved[2, 0, :, -2:].any()  # left two columns


def test_consistency_phase_pulls_a_view_towards_the_image_and_steps_the_encoder_only(dataset):
    model_cfg, train_cfg = configs("semi_supervised_augmented")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    nets = (t.encoder, t.decoder, t.discriminator, t.nets["discriminator_y"])
    t.encoder.eval()  # no dropout: the view's q(y|x) and the image's differ by the shift alone
    x = to_float(dataset.train.images[:50])
    view = data.translate(x, torch.randint(-2, 3, (50, 2), generator=torch.Generator().manual_seed(0)), 2)

    def disagreement():
        with torch.no_grad():
            p, q = t.encoder.category(x), t.encoder.category(view)
            return (p * (p.clamp_min(1e-12).log() - q.clamp_min(1e-12).log())).sum(1).mean().item()  # KL(p || q)

    for _ in range(30):  # an encoder with opinions: sure of the images' classes, less so of the views'
        phases.classification_phase(t.encoder, t.optimizers["classification"], x, dataset.train.labels[:50])
    before = snapshots(*nets)
    start = disagreement()
    for _ in range(20):
        phases.consistency_phase(t.encoder, t.optimizers["consistency"], x, view, 1.0)
    assert disagreement() < start / 2, (start, disagreement())
    assert not unchanged(before[0], t.encoder)
    assert all(unchanged(b, m) for b, m in zip(before[1:], nets[1:]))


def test_consistency_threshold_targets_only_the_sure_images_with_their_argmax(dataset):
    model_cfg, train_cfg = configs("semi_supervised_augmented")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    t.encoder.eval()
    x = to_float(dataset.train.images[:50])
    for _ in range(30):  # sure of some images
        phases.classification_phase(t.encoder, t.optimizers["classification"], x[:25], dataset.train.labels[:25])
    with torch.no_grad():
        probs = t.encoder.category(x)
        log_view = torch.log_softmax(t.encoder.split(x.flip(3))[0], 1)
    sure = probs.max(1).values > 0.9
    assert 0 < sure.sum() < 50
    expected = -log_view[sure].gather(1, probs[sure].argmax(1, keepdim=True)).sum() / 50
    t.optimizers["consistency"].zero_grad()
    loss = phases.consistency_phase(t.encoder, t.optimizers["consistency"], x, x.flip(3), 2.0, threshold=0.9)
    assert loss.item() == pytest.approx(2 * expected.item(), rel=1e-5)


def test_augment_changes_what_the_category_phases_read_and_draws_nothing_when_off(dataset):
    """With --augment 0 the draws are as before the flag existed (tests/test_variants.py holds their checksums);
    with it, each step draws a shift an image, from the prior stream that the checkpoint saves."""
    model_cfg, train_cfg = configs("semi_supervised")
    rows = torch.arange(50)
    off = Trainer(model_cfg, replace(train_cfg, augment=0), "cpu", dataset.train.labels).model
    on = Trainer(model_cfg, replace(train_cfg, augment=2), "cpu", dataset.train.labels).model
    off.prepare(dataset), on.prepare(dataset)
    assert {"shift", "label_shift"}.isdisjoint(off.draw(rows))
    draws = on.draw(rows)
    assert draws["shift"].shape == (50, 2) and draws["label_shift"].shape == (len(draws["pick"]), 2)
    assert draws["shift"].abs().max() <= 2 and draws["shift"].float().std() > 0
    x = to_float(dataset.train.images[:50])
    assert torch.equal(off.view(x, draws, "shift"), x) and not torch.equal(on.view(x, draws, "shift"), x)


@pytest.mark.parametrize("pixels", [14, 20])
def test_augment_that_shifts_the_digits_out_of_view_is_refused(pixels):
    model_cfg, train_cfg = configs("clustering", augment=pixels)
    with pytest.raises(ValueError, match=f"--augment {pixels} shifts the images out of view: use 0 to 13 pixels"):
        variants.check(model_cfg, train_cfg)


def test_clustering_spreads_the_images_over_the_clusters(dataset):
    used = {}
    for balance in (0.0, TrainConfig.balance_weight):
        used[balance] = []
        for seed in range(4):  # one tiny run is a coin toss; four of them are not
            model_cfg, train_cfg = configs("clustering", epochs=12, seed=seed, balance_weight=balance)
            trainer = fit(Trainer(model_cfg, train_cfg, "cpu", None), dataset)
            used[balance].append(trainer.model.predict_category(dataset.test.images).unique().numel())
    # of 12 categories, here: [1, 1, 1, 1] without the balance term, [2, 1, 4, 1] with it
    assert max(used[TrainConfig.balance_weight]) >= 3 and sum(used[TrainConfig.balance_weight]) > sum(used[0.0]), used


def test_category_effect_is_zero_exactly_when_the_decoder_ignores_the_category(dataset):
    model_cfg, train_cfg = configs("clustering")
    t = Trainer(model_cfg, train_cfg, "cpu").model
    images = dataset.test.images
    assert t.category_effect(images) > 1e-3
    assert t.category_effect(images) == t.category_effect(images)
    with torch.no_grad():
        t.decoder.net[0].weight[:, :12] = 0  # the columns that read y (12 clusters)
    assert t.category_effect(images) == 0
    assert t.encoder.training and t.decoder.training  # left as it found them


def test_style_discriminator_reads_the_category(dataset):
    model_cfg, train_cfg = configs("clustering")  # 12 clusters
    assert Trainer(model_cfg, train_cfg, "cpu").model.discriminator.net[0].in_features == model_cfg.latent_dim + 12
    model_cfg, train_cfg = configs("semi_supervised")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    assert t.discriminator.net[0].in_features == model_cfg.latent_dim + 10
    seen = []
    original = t.discriminator.forward
    t.discriminator.forward = lambda z: seen.append(z.detach().clone()) or original(z)
    x = to_float(dataset.train.images[:50])
    t.prepare(dataset)  # its labelled images, for the classification phase
    one_step(t, x, torch.arange(50))
    for part in (seen[0][:50, 2:], seen[0][50:, 2:]):  # prior draws, then codes: [z, one-hot y]
        assert ((part == 0) | (part == 1)).all() and (part.sum(1) == 1).all()
    t.encoder.eval()  # the same outputs from each call below
    x = to_float(dataset.train.images[:8]).requires_grad_(True)
    both = t.encoder.style_and_category(x)
    logits, z = t.encoder.split(x)
    assert torch.equal(both[:, :2], z) and torch.equal(both[:, 2:].argmax(1), logits.argmax(1))
    weights = torch.arange(10.0)  # a plain sum would pass no gradient through a softmax either
    grad, = torch.autograd.grad((both[:, 2:] * weights).sum() + 0 * both.sum(), x)
    assert not grad.any()
    grad, = torch.autograd.grad((t.encoder.one_hot(x) * weights).sum(), x)
    assert grad.any()  # the straight-through one does


def test_supervised_discriminator_reads_the_label(dataset):
    model_cfg, train_cfg = configs("supervised")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    assert t.discriminator.net[0].in_features == model_cfg.latent_dim + 10
    rows = torch.arange(50)
    x, y = to_float(dataset.train.images[:50]), dataset.train.labels[:50]
    before = snapshots(t.discriminator)[0]
    seen = []
    original = t.discriminator.forward
    t.discriminator.forward = lambda z: seen.append(z.detach().clone()) or original(z)
    one_step(t, x, rows)
    assert not unchanged(before, t.discriminator)
    onehot = torch.nn.functional.one_hot(y, 10).float()
    assert torch.equal(seen[0][50:, 2:], onehot) and torch.equal(seen[0][:50, 2:], onehot)  # prior draws, then codes


def test_label_discriminator_draws_each_label_from_its_own_component(dataset):
    model_cfg, train_cfg = configs("label_discriminator_mixture")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    y = torch.arange(2000) % 11 - 1  # -1 (unlabelled), 0, ..., 9
    t.labels = y  # the labels of 2000 training rows, as select_labels gives them
    z = t.draw(torch.arange(2000))["z"]
    component = torch.round(torch.atan2(z[:, 1], z[:, 0]) / (2 * math.pi / 10)).long() % 10
    labelled = y >= 0
    assert (component[labelled] == y[labelled]).float().mean() > 0.99
    assert len(component[~labelled].unique()) == 10  # unlabelled draws spread over every component


def test_categorical_prior_draws_decode_one_category_a_column(dataset):
    model_cfg, train_cfg = configs("clustering")
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    code = t.sample_prior(24)
    assert code.shape == (24, 12 + 2)
    assert torch.equal(code[:, :12].argmax(1), torch.arange(24) % 12)
    assert t.decoder(code).shape == (24, 1, 28, 28)


# -- options that contradict each other, and the command line -------------------------------------


@pytest.mark.parametrize("model_fields, train_fields, message", [
    ({"label_discriminator": True}, {}, "use --prior mixture or swiss_roll"),
    ({"label_discriminator": True, "mode": "supervised"}, {"prior": "mixture"}, "goes with --mode unsupervised"),
    ({"mode": "semi_supervised", "encoder": "gaussian"}, {}, "has its own encoder"),
    ({"mode": "supervised"}, {"labels": 100}, "decodes every image with its label"),
    ({"mode": "clustering"}, {"labels": 100}, "reads no labels"),
    ({"mode": "semi_supervised"}, {"labels": 0}, "use --mode clustering"),
    ({"mode": "clustering", "clusters": 1}, {}, "--clusters 1 puts every image in one cluster"),
    ({"mode": "dim_reduction", "clusters": 1}, {"labels": 0}, "--clusters 1 puts every image in one cluster"),
])
def test_contradicting_options_are_refused(model_fields, train_fields, message):
    with pytest.raises(ValueError, match=message):
        variants.check(ModelConfig(latent_dim=2, **model_fields), TrainConfig(**train_fields))


def test_command_line_trains_a_model_writes_its_outputs_and_refuses_a_contradicting_resume(idx_dir, tmp_path,
                                                                                            capsys):
    weights = tmp_path / "w"
    common = ["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "50", "--weights", str(weights)]
    assert main.main([*common, "--epochs", "1", "--mode", "semi_supervised", "--labels", "20", "--threads", "1"]) == 0
    numbers = json.loads((weights / commands.NUMBERS_NAME).read_text())
    assert numbers["mode"] == "semi_supervised" and numbers["labelled_examples"] == 20 and "test_error" in numbers
    assert (weights / "semi_supervised_styles.png").is_file() and (weights / "aae.pt").is_file()
    for usual in ("samples.png", "reconstructions.png", "losses.png"):  # as a plain run leaves them
        assert (weights / usual).is_file(), usual
    assert "test_error" in capsys.readouterr().out
    assert main.main([*common, "--epochs", "2", "--mode", "clustering", "--resume"]) == 2
    assert "--mode clustering (checkpoint: semi_supervised)" in capsys.readouterr().err


@pytest.mark.parametrize("mode, flags, number, picture", [
    ("semi_supervised", ["--labels", "20"], "test_error", "semi_supervised_styles.png"),
    ("clustering", ["--clusters", "12"], "test_cluster_error", "clustering_clusters.png"),
    ("supervised", [], "knn_accuracy", "supervised_styles.png"),
    ("dim_reduction", ["--labels", "20"], "knn_accuracy_2d", "dim_reduction_codes.png"),
])
def test_draw_and_evaluate_read_a_model_checkpoint(mode, flags, number, picture, idx_dir, tmp_path, capsys):
    weights, out = tmp_path / "w", tmp_path / "out"
    assert main.main(["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "50", "--epochs", "1",
                      "--threads", "1", "--mode", mode, *flags, "--weights", str(weights)]) == 0
    trained = json.loads((weights / commands.NUMBERS_NAME).read_text())
    assert main.main(["draw", "--weights", str(weights), "--out", str(out / "pictures")]) == 0
    for name in (picture, "samples.png", "reconstructions.png", "losses.png"):
        assert (out / "pictures" / name).read_bytes()[:4] == b"\x89PNG", name
    assert main.main(["draw", "samples", "--weights", str(weights), "--out", str(out / "one")]) == 0
    assert [p.name for p in (out / "one").iterdir()] == ["samples.png"]
    capsys.readouterr()
    assert main.main(["draw", "interpolation", "--weights", str(weights)]) == 2
    assert f"(--mode {mode}) has no 'interpolation' picture" in capsys.readouterr().err
    assert main.main(["evaluate", "--weights", str(weights), "--out", str(out / "report")]) == 0
    numbers = json.loads((out / "report" / "metrics.json").read_text())
    assert numbers["mode"] == mode and numbers[number] == trained[number]  # the same model, the same number
    report = (out / "report" / "report.md").read_text()
    assert f"| {number} |" in report and f"]({picture})" in report
    assert (out / "report" / picture).is_file()


def test_a_plain_checkpoint_has_no_mode_picture(idx_dir, tmp_path, capsys):
    weights = tmp_path / "w"
    assert main.main(["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "50", "--epochs", "1",
                      "--threads", "1", "--weights", str(weights)]) == 0
    capsys.readouterr()
    assert main.main(["draw", "mode", "--weights", str(weights)]) == 2
    assert "(--mode unsupervised) has no 'mode' picture" in capsys.readouterr().err


def test_draw_and_evaluate_give_a_label_discriminator_checkpoint_its_number_and_picture(idx_dir, tmp_path, capsys):
    # a plain-mode model with numbers and a picture of its own (README's table reports label_part_accuracy)
    weights, out = tmp_path / "w", tmp_path / "out"
    assert main.main(["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "50", "--epochs", "1",
                      "--threads", "1", "--label_discriminator", "--prior", "mixture", "--weights", str(weights)]) == 0
    trained = json.loads((weights / commands.NUMBERS_NAME).read_text())
    assert main.main(["draw", "mode", "--weights", str(weights), "--out", str(out / "pictures")]) == 0
    assert [p.name for p in (out / "pictures").iterdir()] == ["latent_codes.png"]
    assert main.main(["evaluate", "--weights", str(weights), "--out", str(out / "report"), "--samples", "200"]) == 0
    assert "label_part_accuracy" in capsys.readouterr().out
    # evaluate puts the model's own numbers into metrics.json, beside the protocol's (no mode_metrics.json)
    numbers = json.loads((out / "report" / "metrics.json").read_text())
    assert numbers["label_part_accuracy"] == trained["label_part_accuracy"]  # the same model, the same number
    assert not (out / "report" / commands.NUMBERS_NAME).exists() and (out / "report" / "latent_codes.png").is_file()


def test_eval_every_logs_a_models_numbers_and_leaves_training_unchanged(idx_dir, tmp_path, capsys):
    common = ["--directory", str(idx_dir), "--epochs", "2", "--latent_dim", "2", "--batch_size", "50",
              "--threads", "1", "--mode", "clustering", "--clusters", "12"]
    assert main.main([*common, "--weights", str(tmp_path / "plain")]) == 0
    assert main.main([*common, "--weights", str(tmp_path / "eval"), "--eval_every", "1"]) == 0
    assert "test_cluster_error" in capsys.readouterr().out
    rows = utils.read_csv(tmp_path / "eval" / utils.LOG_NAME)
    assert all(0 <= row["test_cluster_error"] <= 1 and row["clusters_used"] >= 1 for row in rows)
    a = torch.load(tmp_path / "plain" / utils.CHECKPOINT_NAME, weights_only=True)
    b = torch.load(tmp_path / "eval" / utils.CHECKPOINT_NAME, weights_only=True)
    for net in ("encoder", "decoder", "discriminator", "discriminator_y"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"


# Every model now trains under torchrun: the old refusal ("--mode clustering trains in one process: run it with
# python main.py, not torchrun") is gone, so this runs them in two gloo processes.
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="this torch build has no gloo backend")
@pytest.mark.parametrize("flags, variant", [(["--mode", "clustering"], "clustering"),
                                            (["--label_discriminator", "--prior", "mixture"], "label_discriminator")])
def test_torchrun_trains_the_paper_models(flags, variant, idx_dir, tmp_path):
    weights = tmp_path / "w"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "main.py", "--directory", str(idx_dir), "--latent_dim", "2", "--epochs", "1", "--batch_size", "50",
               "--device", "cpu", "--threads", "1", "--weights", str(weights), *flags]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "trains in one process" not in run.stderr, run.stderr[-2000:]
    assert "x 2 processes" in run.stdout and run.stdout.count("done:") == 1, run.stdout
    trained = utils.load_models(weights)
    assert type(trained) is variants.VARIANTS[variant] and len(trained.history) == 1
    assert (weights / commands.NUMBERS_NAME).is_file()


def test_contradicting_flags_exit_2_before_any_work(idx_dir, tmp_path, capsys):
    code = main.main(["--directory", str(idx_dir), "--weights", str(tmp_path / "w"), "--label_discriminator"])
    assert code == 2 and "use --prior mixture or swiss_roll" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv, message", [
    (["--labels", "-2"], "--labels: must be a count >= 0, or -1"),
    (["--mode", "gan"], "--mode: invalid choice"),
    (["--prior", "cauchy"], "--prior: invalid choice"),
    (["--encoder", "vae"], "--encoder: invalid choice"),
    (["--clusters", "0"], "--clusters: must be at least 1"),
])
def test_bad_mode_flags_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main.build_parser().parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_mode_flags_reach_the_configs():
    args = main.build_parser().parse_args(["--mode", "clustering", "--clusters", "30", "--prior", "uniform",
                                           "--encoder", "universal", "--noise_dim", "4", "--labels", "0",
                                           "--label_discriminator", "--classification_lr", "1e-3"])
    model_cfg, train_cfg = commands.configs_from(args)
    assert (model_cfg.mode, model_cfg.clusters, model_cfg.encoder, model_cfg.noise_dim) == ("clustering", 30, "universal", 4)
    assert model_cfg.label_discriminator is True
    assert (train_cfg.prior, train_cfg.labels, train_cfg.classification_lr) == ("uniform", 0, 1e-3)
    default_model, default_train = commands.configs_from(main.build_parser().parse_args([]))
    assert default_model == ModelConfig() and default_train == TrainConfig()


def test_the_plain_aae_leaves_its_outputs_to_evaluate_and_draw():
    def own_numbers(model_cfg, train_cfg):
        return variants.build(model_cfg, train_cfg, "cpu").own_numbers()

    assert not own_numbers(ModelConfig(), TrainConfig())
    assert own_numbers(ModelConfig(), TrainConfig(prior="uniform"))
    assert own_numbers(ModelConfig(encoder="universal"), TrainConfig())
    assert own_numbers(ModelConfig(mode="clustering"), TrainConfig())


def test_a_mode_checkpoint_without_its_state_gets_one_line(idx_dir, tmp_path, capsys):
    weights = tmp_path / "w"
    assert main.main(["--directory", str(idx_dir), "--latent_dim", "2", "--batch_size", "50", "--epochs", "1",
                      "--threads", "1", "--mode", "clustering", "--weights", str(weights)]) == 0
    ckpt = torch.load(weights / utils.CHECKPOINT_NAME, weights_only=True)
    del ckpt["discriminator_y"]
    utils.save_checkpoint(ckpt, weights / utils.CHECKPOINT_NAME)
    capsys.readouterr()
    for command in ("draw", "evaluate"):
        assert main.main([command, "--weights", str(weights)]) == 1
        err = capsys.readouterr().err
        # load_checkpoint now checks every network of the checkpoint's model against its configs
        assert "the discriminator_y weights do not fit the saved configuration" in err and err.count("\n") == 1


def test_the_configured_balance_and_confidence_weights_reach_the_category_phase(dataset, monkeypatch):
    seen = []
    real = categorical.category_generator_phase
    monkeypatch.setattr(categorical, "category_generator_phase", lambda *a, **k: seen.append(a[5:]) or real(*a, **k))
    model_cfg, train_cfg = configs("clustering", balance_weight=0.25, confidence_weight=0.5)
    t = Trainer(model_cfg, train_cfg, "cpu", dataset.train.labels).model
    one_step(t, to_float(dataset.train.images[:50]), torch.arange(50))
    assert seen == [(0.25, 0.5)]
