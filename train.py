"""The training loop, the same for every model of the paper: epochs, random streams, schedule, checkpoints.

    from train import Trainer
    trainer = Trainer(ModelConfig(), TrainConfig(epochs=10), "cpu", data.train.labels)
    trainer.fit(data, save=lambda t: utils.save_checkpoint(t.state_dict(), "weights/aae.pt"))

The model (a variant: aae.py, conditional.py, categorical.py; variants.build) owns its networks,
optimisers and per-batch phases; the loop asks it for the random inputs of a step (`draw`), runs
the step, and adds up the losses under the model's column names. It never asks which model it holds.

It owns: epochs over a fresh random order of the training split; the learning-rate schedule of every
optimiser; the history (one row an epoch); checkpoints and exact resume, also from inside an epoch
(`Interrupted`); a stop on a non-finite loss (`NonFiniteLoss`) before the epoch counts as done; CUDA
graphs (a full batch's step replayed from one launch); and data parallelism under torchrun: each
process trains on its shard of every epoch, and every optimiser averages its gradients over the
processes before it steps. Run it through main.py.
"""

import math
import sys
import time
import warnings
from dataclasses import asdict

import torch

import variants
from aae import LABEL_BATCH_SEED
from config import FORMAT_VERSION, ModelConfig, TrainConfig
from data import to_float

RANK_SEED_STRIDE = 10_000  # rank r seeds its dropout and prior draws with seed + r * this: far from seed + 1, + 2
# The side columns of checkpoints written before the variants, kept apart in their "mode_state".
LEGACY_SIDE_COLUMNS = ("disc_y_loss", "gen_y_loss", "disc_y_accuracy", "classification_loss", "cluster_head_loss")
PHASE_OF_COLUMN = {"recon_loss": "reconstruction", "disc_loss": "discriminator", "gen_loss": "generator"}


class NonFiniteLoss(RuntimeError):
    """A phase's loss became NaN or infinite: the run cannot continue from here."""

    def __init__(self, phase, epoch):
        super().__init__(f"the {phase} loss became non-finite in epoch {epoch}")
        self.phase, self.epoch = phase, epoch


class Interrupted(Exception):
    """Training stopped at a safe point because a stop was requested; a checkpoint was saved."""


def lr_factor(schedule, epoch, epochs):
    """The multiple of its initial learning rate that each optimiser uses in epoch `epoch` (0-based)."""
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def shard(order, rank, world_size):
    """This rank's part of an epoch's order: every world_size-th index from `rank`, all ranks equally many."""
    n = len(order)
    return order[: n - n % world_size][rank::world_size]


def average_gradients(optimizer, args, kwargs):
    """An optimiser step pre-hook: its gradients become their mean over the torch.distributed processes.

    What DistributedDataParallel does, for any model: DDP synchronises through forward() only, and the
    paper's models also call their networks' other methods (a category head, a style head). One
    all-reduce of a flat copy of the optimiser's gradients per step.
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def portable_state(optimizer):
    """optimizer.state_dict() with a learning rate kept as a device tensor (CUDA graphs) saved as a number."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:  # copies of the optimiser's groups
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = group["lr"].item()
    return state


class Trainer:
    """One training run: the model, its random streams and its progress."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, device, train_labels=None, rank=0,
                 world_size=1, cuda_graphs=False):
        """train_labels: the training split's labels, for a model that reads some (it keeps only those it may).
        rank, world_size: this process's place in a torch.distributed group (init_process_group done).
        cuda_graphs: replay full batches as a CUDA graph (CUDA, one process); eager if capture fails."""
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        cls = variants.variant_class(model_cfg)
        self.cuda_graphs = (cuda_graphs and self.device.type == "cuda" and world_size == 1
                            and cls.cannot_graph is None)
        self._graphed = None  # the GraphedStep of the data set being trained on
        torch.manual_seed(train_cfg.seed)  # weights, then dropout masks
        self.model = variants.build(model_cfg, train_cfg, self.device, train_labels, cuda_graphs=self.cuda_graphs)
        if rank:  # the same weights on every rank; its own dropout masks and prior draws (below)
            torch.manual_seed(train_cfg.seed + RANK_SEED_STRIDE * rank)
        # Shuffling is drawn on the CPU so that every device (and every rank) sees the same order.
        self.data_rng = torch.Generator().manual_seed(train_cfg.seed + 1)
        self.model.prior_rng = torch.Generator(device=self.device).manual_seed(
            train_cfg.seed + 2 + RANK_SEED_STRIDE * rank)
        self.model.label_rng = torch.Generator().manual_seed(
            train_cfg.seed + LABEL_BATCH_SEED + RANK_SEED_STRIDE * rank)
        if world_size > 1:
            for optimizer in self.model.optimizers.values():
                optimizer.register_step_pre_hook(average_gradients)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps, all epochs
        self.partial = None  # progress through an interrupted epoch, see run_epoch()

    @property
    def cfg(self):
        return self.model.train_cfg

    @property
    def model_cfg(self):
        return self.model.model_cfg

    @property
    def history(self):
        """One dict per completed epoch."""
        return self.model.history

    # -- the epoch loop -----------------------------------------------------------------------

    def train_batch(self, train_images, index, sums):
        """One step on train_images[index]: replayed as a CUDA graph when enabled and the batch is full."""
        if self.cuda_graphs and len(index) == self.cfg.batch_size:
            if self._graphed is None or self._graphed.images is not train_images:
                self._graphed = GraphedStep(self.model, train_images)
            self._graphed(index, sums)
        else:
            draws = self.model.draw(index)
            self.model.step(to_float(train_images[index]), index, draws, sums)

    def run_epoch(self, train_images, should_stop, progress, watch=None):
        """One pass over the training split in a fresh random order; returns the mean of each column.

        Raises Interrupted (after saving progress into self.partial) when should_stop() turns true.
        """
        n, b = len(train_images), self.cfg.batch_size
        if self.partial is None:
            start_state = self.data_rng.get_state()
            order = torch.randperm(n, generator=self.data_rng)
            first = 0
            sums = torch.zeros(len(self.model.columns), device=self.device, dtype=torch.float64)
        else:  # resuming inside an epoch: redraw its order, skip the steps already taken
            start_state = self.partial["data_rng"]
            self.data_rng.set_state(start_state)
            order = torch.randperm(n, generator=self.data_rng)
            first, sums = self.partial["step_in_epoch"], self.partial["sums"].to(self.device)
            self.partial = None
        order = shard(order, self.rank, self.world_size).to(self.device)
        n_steps = math.ceil(len(order) / b)
        self.model.train()
        bar = progress(total=n_steps, initial=first, desc=self.progress_text())
        for i in range(first, n_steps):
            self.train_batch(train_images, order[i * b : (i + 1) * b], sums)
            self.step += 1
            bar.update(1)
            if watch is not None:
                watch.step(self, sums, i + 1)
            if should_stop() and i + 1 < n_steps:
                bar.close()
                self.partial = {"data_rng": start_state, "step_in_epoch": i + 1, "sums": sums.cpu()}
                raise Interrupted()
        bar.close()
        if self.world_size > 1:  # every rank logs, and stops on a non-finite loss, on the same figures
            torch.distributed.all_reduce(sums)
            sums /= self.world_size
        return dict(zip(self.model.columns, (sums / n_steps).tolist()))  # the epoch's one host synchronisation

    def progress_text(self):
        """The bar's label: the epoch, and after the first the whole run's time left at the recent epochs' speed."""
        text = f"epoch {self.epoch + 1}/{self.cfg.epochs}"
        recent = [row["seconds"] for row in self.history[-5:] if "seconds" in row]
        if recent:
            left = round(sum(recent) / len(recent) * (self.cfg.epochs - self.epoch))
            text += f", run {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left"
        return text

    def fit(self, data, save=None, log=print, should_stop=lambda: False, progress=None, evaluate=None, watch=None):
        """Train until cfg.epochs epochs are complete.

        data: a `data.Dataset`; save(trainer): called after every epoch and on interruption;
        evaluate(trainer) -> dict: extra figures for this epoch's history row, or None;
        watch: an object whose step(trainer, sums, steps_in_epoch) runs after every step and epoch(trainer)
        after every epoch's row (dashboard.Dashboard).
        """
        progress = progress or _no_progress
        assert self.model.labels is not None or not self.model.reads_labels(), "it trains on labels: pass train_labels"
        self.model.prepare(data)
        train_images = data.train.images.to(self.device)
        while self.epoch < self.cfg.epochs:
            started = time.perf_counter()
            self.set_learning_rates()
            try:
                means = self.run_epoch(train_images, should_stop, progress, watch)
            except Interrupted:
                if save is not None:
                    save(self)
                raise
            for column, value in means.items():
                if not math.isfinite(value):
                    raise NonFiniteLoss(PHASE_OF_COLUMN.get(column, column.removesuffix("_loss")), self.epoch + 1)
            self.epoch += 1
            means["recon_loss"] *= self.model_cfg.image_size  # summed over the pixels: nats per image
            row = {"epoch": self.epoch, **means, **self.model.epoch_numbers(data.test)}
            if evaluate is not None:
                row.update(evaluate(self) or {})
            row["seconds"] = time.perf_counter() - started
            self.history.append(row)
            if self.rank == 0:
                log(format_row(row, self.cfg.epochs))
            if watch is not None:
                watch.epoch(self)
            if save is not None:
                save(self)
            if should_stop() and self.epoch < self.cfg.epochs:
                raise Interrupted()
        return self.history

    def set_learning_rates(self):
        """Every optimiser's learning rate for the coming epoch, under cfg.lr_decay.

        Each parameter group keeps its first rate as "initial_lr", which its state dict saves. Under
        CUDA graphs a decaying rate is a tensor on the device, written in place: a captured step reads
        it from there, where a Python number would stay the one it was captured with.
        """
        factor = lr_factor(self.cfg.lr_decay, self.epoch, self.cfg.epochs)
        for opt in self.model.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", float(group["lr"]))
                lr = group["initial_lr"] * factor
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                elif self.cuda_graphs and self.cfg.lr_decay != "none":
                    group["lr"] = torch.tensor(lr, device=self.device)
                else:
                    group["lr"] = lr

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self):
        """Everything that decides the rest of the run; loadable with torch.load(weights_only=True)."""
        model = self.model
        rng = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state(),
               "prior": model.prior_rng.get_state(), "labels": model.label_rng.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format_version": FORMAT_VERSION,
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.cfg),
            **{name: net.state_dict() for name, net in model.nets.items()},
            "optimizers": {name: portable_state(opt) for name, opt in model.optimizers.items()},
            "epoch": self.epoch,
            "step": self.step,
            "partial_epoch": self.partial,
            "history": self.history,
            "rng": rng,
        }

    def load_state_dict(self, ckpt):
        """Continue the run `ckpt` (a state_dict(), also one written before the variants) exactly."""
        model = self.model
        for name, net in model.nets.items():
            net.load_state_dict(ckpt[name])
        for name, opt in model.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
            for group in opt.param_groups:  # load_state_dict brings back the saving run's setting
                group["capturable"] = self.cuda_graphs
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        model.history[:] = list(ckpt["history"])
        self.partial = ckpt["partial_epoch"]
        rng, legacy = ckpt["rng"], ckpt.get("mode_state")
        if legacy is not None and self.partial is not None:  # its side losses were summed apart
            side = [legacy["side"][LEGACY_SIDE_COLUMNS.index(c)] for c in model.columns[4:]]
            self.partial = {**self.partial, "sums": torch.cat([self.partial["sums"][:4], torch.stack(side)])}
        torch.set_rng_state(rng["torch"])
        self.data_rng.set_state(rng["data"])
        labels = rng.get("labels", legacy["label_rng"] if legacy is not None else None)
        if labels is not None:
            model.label_rng.set_state(labels)
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        try:
            model.prior_rng.set_state(rng["prior"])
        except RuntimeError:  # saved on another device type: the stream differs from here on
            model.prior_rng.manual_seed(self.cfg.seed + 2 + self.step)


class GraphedStep:
    """A model's step on a full batch, captured once as a CUDA graph and replayed.

    At batch 100 a step is a few hundred small kernels; launching them one by one from Python takes
    longer than running them. The graph replays forward, backward and fused Adam of every phase from
    one launch. Its inputs are static buffers: the batch's indices into the images on the GPU, and
    the model's draws (prior samples, labelled-batch picks), drawn outside the graph from the model's
    generators so that their streams are the eager ones. Dropout draws from the default CUDA
    generator, which graphs support.

    The first `warmup` calls train eagerly on a side stream, as capture needs (optimizer state,
    cuBLAS workspaces): every call is a real training step. If capture fails, it says why on stderr
    and trains eagerly from then on.
    """

    def __init__(self, model, images, warmup=3):
        self.model, self.images, self.warmup = model, images, warmup
        self.index, self.draws = None, None  # the static inputs, made on the first call
        self.graph, self.losses, self.failed = None, None, None

    def _step(self):
        sums = torch.zeros(len(self.model.columns), device=self.model.device, dtype=torch.float64)
        self.model.step(to_float(self.images[self.index]), self.index, self.draws, sums)
        return sums

    def __call__(self, index, sums):
        draws = self.model.draw(index)
        if self.index is None:
            self.index, self.draws = index.clone(), {k: v.clone() for k, v in draws.items()}
        else:
            self.index.copy_(index)
            for key, value in draws.items():
                self.draws[key].copy_(value)
        if self.graph is None and self.failed is None:
            if self.warmup > 0:
                self.warmup -= 1
                device = self.model.device
                side, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)
                side.wait_stream(main)
                with torch.cuda.stream(side), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", ".*capturable=True.*")  # "...running without CUDA graph"
                    step_sums = self._step()
                main.wait_stream(side)
                sums += step_sums
                return
            try:
                self.graph, self.losses = capture(self._step)
            except Exception as e:  # an op or a torch version that cannot be captured: stay correct, eagerly
                self.failed = f"{type(e).__name__}: {e}"
                print(f"warning: CUDA graph capture failed ({self.failed}); training eagerly", file=sys.stderr)
        if self.graph is None:
            sums += self._step()
        else:
            self.graph.replay()
            sums += self.losses


def capture(fn):
    """A CUDA graph of fn(), and the tensor fn returned, which each replay rewrites."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


LOG_COLUMNS = ("epoch", "recon_loss", "disc_loss", "gen_loss", "disc_accuracy", "test_recon_bce", "seconds")


def format_row(row, epochs):
    """One log line with every phase's loss."""
    extra = "".join(
        f" {k} {v:.4g}" for k, v in row.items() if k not in LOG_COLUMNS and isinstance(v, (int, float))
    )
    return (
        f"epoch {row['epoch']:>3}/{epochs}  recon {row['recon_loss']:.2f}  disc {row['disc_loss']:.4f}  "
        f"gen {row['gen_loss']:.4f}  disc_acc {row['disc_accuracy']:.3f}  "
        f"test_recon {row['test_recon_bce']:.2f}{extra}  {row['seconds']:.1f}s"
    )


class _no_progress:
    def __init__(self, **kwargs):
        pass

    def update(self, n):
        pass

    def close(self):
        pass
