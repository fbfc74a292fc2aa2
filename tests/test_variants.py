"""The models as variants: bit-identical to the code before them, one loop for all, one loader, one-way imports,
the run lock, and three behaviours that no test guarded before (the discriminator's direction, the labels a
semi-supervised run reads, each rank's shard)."""

import ast
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import aae
import commands
import data
import main
import phases
import train
import utils
import variants
from models import ModelConfig
from train import NonFiniteLoss, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "checkpoints"
RECORDED = json.loads((FIXTURES / "checksums.json").read_text())

# As tests/data/checkpoints/record.py trained them at 9f2ec64: (ModelConfig fields, TrainConfig fields).
# The categorical models' settings of then, whose defaults changed since (config.py): BEFORE.
BEFORE = {"balance_weight": 1.0, "confidence_weight": 1.0, "augment": 0, "consistency_weight": 0.0}
CASES = {
    "unsupervised": ({}, {}),
    "supervised": ({"mode": "supervised"}, {}),
    "semi_supervised": ({"mode": "semi_supervised"}, {"labels": 20, **BEFORE}),
    "clustering": ({"mode": "clustering", "clusters": 12}, BEFORE),
    "dim_reduction": ({"mode": "dim_reduction"}, {"labels": 20, **BEFORE}),
    "dim_reduction_unlabelled": ({"mode": "dim_reduction", "clusters": 12}, {"labels": 0, **BEFORE}),
    "label_discriminator": ({"label_discriminator": True}, {"prior": "mixture", "labels": 50}),
    "gaussian_encoder_uniform": ({"encoder": "gaussian"}, {"prior": "uniform"}),
    "universal_encoder": ({"encoder": "universal", "noise_dim": 4}, {}),
}
# Not recorded at 9f2ec64 (their flags came later): trained only by the graph tests, against their own eager runs.
AUGMENTED = {
    "semi_supervised_augmented": ({"mode": "semi_supervised"}, {"labels": 20, "augment": 2, "consistency_weight": 1.0}),
    "clustering_augmented": ({"mode": "clustering", "clusters": 12}, {"augment": 1, "consistency_weight": 0.5}),
}
PLAIN_RATE = ("unsupervised", "gaussian_encoder_uniform", "universal_encoder")  # trained at dis_lr 2e-4, others 8e-4


def configs(case, hidden):
    model_fields, train_fields = {**CASES, **AUGMENTED}[case]
    model_cfg = ModelConfig(latent_dim=2, hidden_dim=hidden, dis_hidden_dim=hidden, **model_fields)
    dis_lr = 2e-4 if case in PLAIN_RATE else 8e-4
    return model_cfg, TrainConfig(epochs=2, batch_size=50, seed=0, dis_lr=dis_lr, **train_fields)


def checksum(state):
    """sha256 of the networks' tensors, as record.py computed it."""
    h = hashlib.sha256()
    for net in ("encoder", "decoder", "discriminator", "discriminator_y"):
        for key, value in state.get(net, {}).items():
            h.update(f"{net}.{key}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# -- what must not change -------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_trained_weights_are_bit_identical_to_the_code_before_the_variants(case, dataset):
    trainer = Trainer(*configs(case, 32), "cpu", dataset.train.labels)
    trainer.fit(dataset, log=lambda line: None)
    assert checksum(trainer.state_dict()) == RECORDED[case]


@pytest.mark.parametrize("case", CASES)
def test_checkpoints_of_the_code_before_resume_to_the_weights_it_reached(case, dataset):
    ckpt = utils.load_checkpoint(FIXTURES / f"{case}.pt")
    assert ckpt["epoch"] == 1 and "rng" in ckpt
    trainer = Trainer(*configs(case, 16), "cpu", dataset.train.labels)
    trainer.load_state_dict(ckpt)
    trainer.fit(dataset, log=lambda line: None)
    assert trainer.epoch == 2 and checksum(trainer.state_dict()) == RECORDED[f"{case}_resumed"]


@pytest.mark.parametrize("case", CASES)
def test_every_checkpoint_loads_as_one_kind_of_model(case, dataset):
    model = utils.load_models(FIXTURES / f"{case}.pt")
    assert isinstance(model, aae.Variant) and type(model) is variants.variant_class(model.model_cfg)
    assert not any(net.training for net in model.nets.values())
    codes = model.encode(dataset.test.images[:7])
    assert len(codes) == 7 and torch.equal(codes, model.encode(dataset.test.images[:7]))  # eval mode: repeatable
    assert model.sample(5).shape == (5, 1, 28, 28)
    images = model.decode(model.sample_prior(3, generator=torch.Generator().manual_seed(0)))
    assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert len(model.history) == 1
    if isinstance(model, variants.categorical.CategoricalAAE):
        assert model.predict_category(dataset.test.images[:7]).shape == (7,)


# -- one loop, no questions about the model -------------------------------------------------------

ASKS_WHICH_MODEL = re.compile(r"(mode|label_discriminator)\b *(==|!=|in )|if .*label_discriminator")
VARIANT_FILES = {"aae.py", "conditional.py", "categorical.py", "variants.py"}


def project_files():
    return sorted(p for p in ROOT.glob("*.py"))


def test_no_code_outside_the_variants_asks_which_model_it_runs():
    asking = [f"{p.name}:{i}: {line.strip()}" for p in project_files() if p.name not in VARIANT_FILES
              for i, line in enumerate(p.read_text().splitlines(), 1) if ASKS_WHICH_MODEL.search(line)]
    assert asking == []


def test_a_new_model_is_one_class_and_one_registry_line(dataset, monkeypatch):
    class QuietAAE(aae.AAE):
        """A model the loop has never heard of: the plain AAE without its generator phase."""

        columns = ("recon_loss", "disc_loss", "gen_loss", "disc_accuracy")

        def step(self, x, rows, draws, sums):
            sums[0] += phases.reconstruction_phase(self.encoder, self.decoder, self.optimizers["reconstruction"], x)

    monkeypatch.setitem(variants.VARIANTS, "quiet", QuietAAE)
    trainer = Trainer(ModelConfig(latent_dim=2, hidden_dim=16, dis_hidden_dim=16, mode="quiet"),
                      TrainConfig(epochs=1, batch_size=50), "cpu")
    discriminator = {k: v.clone() for k, v in trainer.model.discriminator.state_dict().items()}
    trainer.fit(dataset, log=lambda line: None)
    assert type(trainer.model) is QuietAAE and trainer.history[0]["recon_loss"] > 0
    assert all(torch.equal(v, trainer.model.discriminator.state_dict()[k]) for k, v in discriminator.items())


def fit_on_cpu(case, dataset, graphs):
    model_cfg, train_cfg = configs(case, 16)
    trainer = Trainer(model_cfg, replace(train_cfg, batch_size=30), "cpu", dataset.train.labels)
    trainer.cuda_graphs = graphs  # GraphedStep's plumbing on the CPU (conftest.cpu_graphs stands in for capture)
    trainer.fit(dataset, log=lambda line: None)
    return trainer


@pytest.mark.parametrize("case", [*CASES, *AUGMENTED])
def test_every_model_trains_through_graphed_steps_as_through_eager_ones(case, dataset, cpu_graphs):
    """The plumbing only (static index and draws, warm-up, sums): the stand-in reruns the Python step at each
    replay. test_every_model_replays_cuda_graphs_as_eager_steps is the real thing."""
    eager, graphed = fit_on_cpu(case, dataset, False), fit_on_cpu(case, dataset, True)
    assert len(cpu_graphs) == 1 and graphed._graphed.graph is cpu_graphs[0]  # captured once, then replayed
    assert checksum(eager.state_dict()) == checksum(graphed.state_dict())
    without_time = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert without_time(eager.history) == without_time(graphed.history)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("case", [*CASES, *AUGMENTED])
def test_every_model_replays_cuda_graphs_as_eager_steps(case, dataset):
    """A real captured graph per model: each replay must read the batch's rows and draws copied into its buffers."""
    model_cfg, train_cfg = configs(case, 32)
    runs = []
    for graphs in (False, True):  # each built right before it trains: Trainer seeds the global (dropout) RNG
        runs.append(Trainer(model_cfg, replace(train_cfg, epochs=4), "cuda", dataset.train.labels, cuda_graphs=graphs))
        runs[-1].fit(dataset, log=lambda line: None)
    eager, graphed = runs
    assert graphed._graphed.failed is None and graphed._graphed.graph is not None
    # exact, as the plain AAE's is on an H200: the same kernels on the same inputs
    assert checksum(eager.state_dict()) == checksum(graphed.state_dict())


# -- three behaviours no test guarded ------------------------------------------------------------


def test_the_discriminator_learns_to_call_prior_draws_real_and_codes_fake():
    torch.manual_seed(0)
    model = aae.AAE(ModelConfig(latent_dim=2, hidden_dim=32, dis_hidden_dim=32), TrainConfig(), "cpu")
    codes = torch.randn(100, 2) * 0.5 + 3  # fixed codes, away from the prior
    prior = torch.randn(100, 2) * 5

    def gap():
        with aae.evaluating(model.discriminator):
            return float(model.discriminator(prior).sigmoid().mean() - model.discriminator(codes).sigmoid().mean())

    before = gap()
    for _ in range(100):
        phases.discriminator_phase(lambda x: codes, model.discriminator, model.optimizers["discriminator"], None, prior)
    after = gap()
    assert after > before + 0.15 and after > 0.15, (before, after)  # swapped targets would make it negative


def test_a_semi_supervised_run_from_the_command_line_holds_exactly_the_chosen_labels(idx_dir, tmp_path, monkeypatch):
    built = []

    class Recorded(Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(commands, "Trainer", Recorded)
    argv = ["--dataset", "mnist", "--directory", str(idx_dir), "--epochs", "1", "--batch_size", "50",
            "--mode", "semi_supervised", "--labels", "20", "--latent_dim", "2", "--weights", str(tmp_path / "w")]
    assert main.main(argv) == 0
    labels = built[0].model.labels.cpu()
    truth = data.load_dataset("mnist", idx_dir).train.labels
    chosen = (labels >= 0).nonzero().flatten()
    assert len(chosen) == 20 and torch.equal(labels[chosen], truth[chosen])  # the right labels, 20 of them
    assert torch.bincount(labels[chosen], minlength=10).tolist() == [2] * 10  # N / 10 a class
    assert torch.equal(labels, aae.select_labels(truth, 20, 10, seed=0))  # the seed's choice
    assert built[0].model.labelled[1].tolist() == labels[chosen].tolist()  # the labelled batches read only those


def test_the_ranks_shards_are_disjoint_and_cover_the_epoch():
    order = torch.randperm(203, generator=torch.Generator().manual_seed(0))
    shards = [train.shard(order, rank, 3) for rank in range(3)]
    assert len({len(s) for s in shards}) == 1  # as many steps on every rank
    seen = torch.cat(shards)
    assert len(seen.unique()) == len(seen) == 201 and set(seen.tolist()) <= set(order.tolist())
    assert torch.equal(train.shard(order, 0, 1), order)


# -- stops ------------------------------------------------------------------------------------------


def test_a_non_finite_side_loss_names_its_phase_and_the_epoch_it_diverged_in(dataset, monkeypatch):
    trainer = Trainer(*configs("clustering", 16), "cpu", dataset.train.labels)
    generator_y = variants.categorical.category_generator_phase
    monkeypatch.setattr(variants.categorical, "category_generator_phase",
                        lambda *a, **k: generator_y(*a, **k) * (math.nan if trainer.epoch >= 1 else 1))
    with pytest.raises(NonFiniteLoss) as error:
        trainer.fit(dataset, log=lambda line: None)
    assert error.value.phase == "gen_y" and error.value.epoch == 2
    assert trainer.epoch == 1 and len(trainer.history) == 1  # the diverged epoch does not count as done


def test_the_command_line_keeps_the_last_good_epochs_checkpoint_after_a_side_loss_diverges(idx_dir, tmp_path,
                                                                                           monkeypatch, capsys):
    generator_y = variants.categorical.category_generator_phase
    steps = []
    monkeypatch.setattr(variants.categorical, "category_generator_phase",
                        lambda *a, **k: steps.append(1) or generator_y(*a, **k) * (math.nan if len(steps) > 4 else 1))
    weights = tmp_path / "w"
    argv = ["--dataset", "mnist", "--directory", str(idx_dir), "--epochs", "3", "--batch_size", "50",
            "--mode", "clustering", "--clusters", "4", "--latent_dim", "2", "--weights", str(weights)]
    assert main.main(argv) == commands.EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "the gen_y loss became non-finite in epoch 2" in err and "is from epoch 1, the last good one" in err
    assert utils.load_checkpoint(weights)["epoch"] == 1


# -- one-way imports ------------------------------------------------------------------------------

# Each project module imports only modules before it; none imports inside a function but these libraries.
IMPORT_ORDER = ["config", "images", "download", "data", "priors", "models", "phases", "metrics", "baselines", "plots",
                "aae", "conditional", "categorical", "variants", "utils", "train", "evaluate", "dashboard", "commands",
                "use", "bench", "flags", "main"]
LAZY_ALLOWED = {"matplotlib", "matplotlib.pyplot", "matplotlib.ticker", "torchvision", "torchvision.utils",
                "torchvision.datasets", "torchvision.transforms", "PIL", "scipy.io", "torch.utils.tensorboard",
                "torch.utils.tensorboard.summary", "faulthandler", "torch.profiler"}


def imports_of(path):
    """(top-level project imports, names imported inside functions) of a file."""
    tree = ast.parse(path.read_text())
    top, inner = set(), []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            inside = any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in parents(tree, node))
            (inner.extend(names) if inside else top.update(names))
    return {n.split(".")[0] for n in top} & set(IMPORT_ORDER), inner


def parents(tree, target):
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            if child is target:
                return [node, *parents(tree, node)]
    return []


def test_project_modules_import_in_a_fixed_order_without_cycles_or_imports_inside_functions():
    assert {p.stem for p in project_files()} == set(IMPORT_ORDER)  # a new file takes its place in the order
    for name in IMPORT_ORDER:
        top, inner = imports_of(ROOT / f"{name}.py")
        later = [m for m in top if IMPORT_ORDER.index(m) >= IMPORT_ORDER.index(name)]
        assert later == [], f"{name}.py imports {later}, which come after it"
        assert [m for m in inner if m not in LAZY_ALLOWED] == [], f"{name}.py imports inside a function: {inner}"


def test_importing_the_modules_in_that_order_does_no_work(tmp_path):
    code = "import sys; sys.path.insert(0, sys.argv[1]); " + "; ".join(f"import {m}" for m in IMPORT_ORDER)
    before = set(os.listdir(tmp_path))
    subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=tmp_path, check=True, timeout=120)
    assert set(os.listdir(tmp_path)) == before  # no folders made, no files written


# -- one run per folder ---------------------------------------------------------------------------


def test_a_second_run_into_a_folder_a_live_run_holds_is_refused_and_the_lock_dies_with_it(idx_dir, tmp_path):
    weights = tmp_path / "w"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    common = ["--dataset", "mnist", "--directory", str(idx_dir), "--batch_size", "50", "--latent_dim", "2",
              "--weights", str(weights)]
    first = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *common, "--epochs", "100000"], cwd=tmp_path,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (weights / utils.CHECKPOINT_NAME).exists():  # its first epoch is saved
            assert first.poll() is None and time.monotonic() < deadline, "the first run did not get going"
            time.sleep(0.2)
        for extra in ([], ["--resume"], ["--resume", "--epochs", "100001"]):
            second = subprocess.run([sys.executable, str(ROOT / "main.py"), *common, *extra], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, (extra, second.stderr)
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"process {first.pid}" in lines[0] and "another --weights" in lines[0]
        drawn = subprocess.run([sys.executable, str(ROOT / "main.py"), "draw", "samples", "--weights", str(weights),
                                "--out", str(tmp_path / "pictures")], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=120)
        assert drawn.returncode == 0 and (tmp_path / "pictures" / "samples.png").exists()  # reading is allowed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with utils.RunLock(weights):  # kill -9 released it
        pass


def test_the_run_lock_is_exclusive_within_one_process_too(tmp_path):
    with utils.RunLock(tmp_path):
        with pytest.raises(utils.FolderBusy, match=f"process {os.getpid()}"):
            utils.RunLock(tmp_path).acquire()
    utils.RunLock(tmp_path).acquire().release()


def test_a_model_that_cannot_be_distributed_is_refused_under_torchrun_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(variants.categorical.ClusteringAAE, "cannot_distribute", "for a reason of its own")
    monkeypatch.setenv("WORLD_SIZE", "2")
    weights = tmp_path / "w"
    assert main.main(["--mode", "clustering", "--weights", str(weights), "--dataset", "mnist",
                      "--directory", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "trains in one process (for a reason of its own)" in err and not weights.exists()


def test_draw_and_evaluate_read_the_checkpoint_once(idx_dir, tmp_path, monkeypatch):
    weights = tmp_path / "w"
    assert main.main(["--dataset", "mnist", "--directory", str(idx_dir), "--epochs", "1", "--batch_size", "50",
                      "--mode", "clustering", "--clusters", "4", "--latent_dim", "2", "--weights", str(weights)]) == 0
    reads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or load(*a, **k))
    assert main.main(["evaluate", "--weights", str(weights)]) == 0
    assert main.main(["draw", "--weights", str(weights)]) == 0
    assert len(reads) == 2



def test_checking_the_lock_does_not_collide_with_another_check_but_does_with_the_holder(tmp_path):
    (tmp_path / utils.LOCK_NAME).write_text("process 99999 (a run that has ended)\n")
    code = ("import sys, fcntl; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_SH); "
            "print('checking', flush=True); sys.stdin.readline()")
    other = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / utils.LOCK_NAME)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "checking\n"  # another rank holds a check's shared lock right now
        utils.RunLock(tmp_path).check()  # a check at the same moment is not refused
    finally:
        other.communicate("\n", timeout=30)
    with utils.RunLock(tmp_path):
        holder = subprocess.run([sys.executable, "-c", "import sys, utils; utils.RunLock(sys.argv[1]).check()",
                                 str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert holder.returncode != 0 and f"process {os.getpid()}" in holder.stderr


def test_a_model_that_reads_labels_will_not_train_without_them(dataset):
    trainer = Trainer(*configs("semi_supervised", 16), "cpu")  # no train_labels: as if to load weights
    with pytest.raises(AssertionError, match="pass train_labels"):
        trainer.fit(dataset, log=lambda line: None)


def test_draw_and_evaluate_refuse_flags_that_their_pictures_and_protocol_do_not_read(tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    (weights / "aae.pt").write_bytes((FIXTURES / "unsupervised.pt").read_bytes())
    assert main.main(["draw", "samples", "--pairs", "3", "--weights", str(weights), "--out", str(tmp_path / "p")]) == 2
    assert "--pairs is for the interpolation picture: add `interpolation`" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
    (weights / "aae.pt").write_bytes((FIXTURES / "clustering.pt").read_bytes())
    assert main.main(["evaluate", "--samples", "500", "--weights", str(weights), "--out", str(tmp_path / "e")]) == 2
    assert "--samples sizes the Parzen window" in capsys.readouterr().err and not (tmp_path / "e").exists()
