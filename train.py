"""Training an Adversarial Autoencoder: three phases per batch, epochs, checkpoints, resume.

Per batch (paper §2, "the adversarial network and the autoencoder are trained jointly with SGD
in two phases", the second split into discriminator and generator updates):

  1. reconstruction_phase  encoder + decoder minimise the pixel BCE of x -> z -> x'
  2. discriminator_phase   the discriminator learns to tell prior samples from (detached) codes
  3. generator_phase       the encoder learns to fool the discriminator (non-saturating loss)

Each phase owns its optimiser and steps only its own parameters. `Trainer.fit()` runs epochs,
evaluates on the test split, keeps a history and writes a checkpoint (via `utils`) after every
epoch; `Trainer.load_state_dict()` resumes one exactly. Run it through main.py.

Speed (docs/performance.md): on CUDA the data set stays on the GPU and a full batch's three phases
are replayed as one CUDA graph (`GraphedStep`); under torchrun each process trains on its shard
of every epoch and DistributedDataParallel averages the gradients.
"""

import math
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

import priors
from models import ModelConfig, build_models

FORMAT_VERSION = 1
PHASES = ("reconstruction", "discriminator", "generator")


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    directory: str = "data"  # where the data was read from; `main.py draw` reads the test split there
    epochs: int = 100
    # The paper's batch size. The original used 16, which makes 100 epochs ~4x slower on a CPU
    # for no gain in quality that we could measure.
    batch_size: int = 100
    gen_lr: float = 6e-4  # reconstruction phase: Adam on encoder + decoder (the original's value)
    # Discriminator phase, and the encoder's generator phase. The original's 8e-4 kills the discriminator on
    # Fashion-MNIST (71% of its second layer's ReLUs dead by epoch 12; from epoch 57 it gave every code the
    # same logit) and costs reconstruction; at 2e-4, 37% dead at epoch 30 (docs/defaults.md).
    dis_lr: float = 2e-4
    adam_beta1: float = 0.5  # see README "Why these defaults": at 0.9 the adversarial phases swing harder
    prior: str = "gaussian"
    prior_std: float = 5.0  # the original's `randn * 5`
    seed: int = 0
    precision: str = "fp32"  # or "bf16": autocast of the forward passes
    # Labelled training examples for the modes that read labels (modes.py): N, chosen balanced from the
    # seed (N / n_classes a class), or -1 for all. Table 2 of the paper uses 100, 1000 and all.
    labels: int = -1
    # Adam learning rate of their cross-entropy phase on labelled batches. At gen_lr it lost to the
    # category's generator phase (test error stuck near 80% on 2,000 mnist-sample digits, 500 labels,
    # 2 epochs); 3e-3 gave 15% there, and 1e-2 no better.
    classification_lr: float = 3e-3
    # Weight of the categorical modes' balance term (modes.category_generator_phase): log K minus the
    # entropy of the batch's mean q(y|x). Without it every image went to one or two categories
    # (clustering, mnist-sample: 80.3 % error, 2 of 16 clusters used); with 1.0, 55.4 % and all 16.
    balance_weight: float = 1.0
    # Weight of their confidence term (ours too): the mean entropy of q(y|x), so that each image is sure of
    # its category; without it q(y|x) stayed near uniform. Clustering on mnist-sample (16 clusters,
    # 10 epochs, seeds 0-2): 41.8 +- 2.6 % error at 1.0, 44.9 +- 1.7 % at 0.5; at 2.0, above the balance
    # weight, the images gathered in 2 or 3 clusters (75.0 +- 4.7 % error). README for the rest.
    confidence_weight: float = 1.0
    # "cosine": every Adam learning rate follows a half cosine over the run, from its value in the first
    # epoch to near zero in the last (set once an epoch, from the epochs completed). "none": constant.
    lr_decay: str = "none"


# What a checkpoint written before a TrainConfig field existed trained with, where the field's default
# differs: such a checkpoint resumes (and reports) as it was trained.
UNSAVED_VALUES = {"confidence_weight": 0.0}


class NonFiniteLoss(RuntimeError):
    """A phase's loss became NaN or infinite: the run cannot continue from here."""

    def __init__(self, phase, epoch):
        super().__init__(f"the {phase} loss became non-finite in epoch {epoch}")
        self.phase, self.epoch = phase, epoch


class Interrupted(Exception):
    """Training stopped at a safe point because a stop was requested; a checkpoint was saved."""


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

    codes: encoder(x) when the caller has them (Trainer.train_step shares them with the generator
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


@contextmanager
def frozen(module):
    """module's weights get no gradient inside (a generator phase's backward), and do again after."""
    module.requires_grad_(False)
    try:
        yield module
    finally:
        module.requires_grad_(True)


def lr_factor(schedule, epoch, epochs):
    """The multiple of its initial learning rate that each optimiser uses in epoch `epoch` (0-based)."""
    if schedule == "none":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def adam(params, lr, beta1, device, capturable=False):
    # fused Adam: one kernel for all parameters, where this torch supports it on the device;
    # capturable keeps its step counts on the GPU so that a CUDA graph can replay it
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999), fused=device.type in ("cpu", "cuda"),
                            capturable=capturable)


@torch.no_grad()
def test_reconstruction(encoder, decoder, images, batch_size=1000, autocast=nullcontext):
    """Mean summed BCE per image (nats) of uint8 `images` [N, 28, 28], in eval mode."""
    was_training = encoder.training
    encoder.eval(), decoder.eval()
    total = torch.zeros((), device=images.device, dtype=torch.float64)
    for i in range(0, len(images), batch_size):
        x = as_float(images[i : i + batch_size])
        with autocast():
            logits = decoder.logits(encoder(x)).float()
        total += F.binary_cross_entropy_with_logits(logits, x, reduction="sum").double()
    encoder.train(was_training), decoder.train(was_training)
    return (total / len(images)).item()


def as_float(images):
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1]."""
    return images.unsqueeze(1).float().div_(255)


class Trainer:
    """Models, optimisers, random generators and progress of one training run."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, device, rank=0, world_size=1,
                 cuda_graphs=False):
        """rank, world_size: this process's place in a torch.distributed group (init_process_group done).
        cuda_graphs: replay full batches as a CUDA graph (CUDA, one process); eager if capture fails."""
        self.model_cfg, self.cfg = model_cfg, train_cfg
        self.device = torch.device(device)
        self.rank, self.world_size = rank, world_size
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda" and world_size == 1
        self._graphed = None  # the GraphedStep of the data set being trained on
        torch.manual_seed(train_cfg.seed)  # weights, then dropout masks
        self.encoder, self.decoder, self.discriminator = (m.to(self.device) for m in build_models(model_cfg))
        if rank:  # the same weights on every rank; its own dropout masks and prior draws (below)
            torch.manual_seed(train_cfg.seed + RANK_SEED_STRIDE * rank)
        c, dev, graphs = train_cfg, self.device, self.cuda_graphs
        self.optimizers = {
            "reconstruction": adam([*self.encoder.parameters(), *self.decoder.parameters()], c.gen_lr, c.adam_beta1,
                                   dev, graphs),
            "discriminator": adam(self.discriminator.parameters(), c.dis_lr, c.adam_beta1, dev, graphs),
            "generator": adam(self.encoder.parameters(), c.dis_lr, c.adam_beta1, dev, graphs),
        }
        # Shuffling is drawn on the CPU so that every device (and every rank) sees the same order.
        self.data_rng = torch.Generator().manual_seed(train_cfg.seed + 1)
        self.prior_rng = torch.Generator(device=self.device).manual_seed(train_cfg.seed + 2 + RANK_SEED_STRIDE * rank)
        # The modules each phase trains, through DDP when several processes train: it averages their
        # gradients during the backward. The frozen discriminator of the generator phase, whose weights get
        # no gradient, is the bare module.
        self.synced = SimpleNamespace(encoder=self.encoder, decoder=self.decoder, discriminator=self.discriminator)
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.synced.encoder = DDP(self.encoder, device_ids=ids)
            self.synced.decoder = SimpleNamespace(logits=DDP(_Logits(self.decoder), device_ids=ids))
            self.synced.discriminator = DDP(self.discriminator, device_ids=ids)
        self.epoch = 0  # completed epochs
        self.step = 0  # completed steps, all epochs
        self.history = []  # one dict per completed epoch
        self.partial = None  # progress through an interrupted epoch, see save_partial()
        if train_cfg.precision == "bf16":
            # no weight-cast cache: each phase casts its weights once anyway, and a CUDA graph needs it off
            self.autocast = lambda: torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False)
        else:
            self.autocast = nullcontext

    # -- the epoch loop -----------------------------------------------------------------------

    def sample_prior(self, n, generator=None):
        params = {"std": self.cfg.prior_std} if self.cfg.prior == "gaussian" else {}
        return priors.sample(
            self.cfg.prior, n, self.model_cfg.latent_dim, generator=generator or self.prior_rng, device=self.device, **params
        )

    def train_step(self, x, sums, z_prior=None):
        """The three phases on one batch; adds each phase's loss to the on-device `sums`.

        The discriminator phase does not change the encoder, so both adversarial phases see the same
        codes: one encoder forward (and one set of dropout masks) instead of two, ~7% of a step's work.
        """
        synced = self.synced
        sums[0] += reconstruction_phase(synced.encoder, synced.decoder, self.optimizers["reconstruction"], x,
                                        self.autocast)
        z_prior = self.sample_prior(len(x)) if z_prior is None else z_prior
        with self.autocast():
            codes = synced.encoder(x)  # kept with its graph for the generator phase's backward
        d_loss, d_acc = discriminator_phase(None, synced.discriminator, self.optimizers["discriminator"], x, z_prior,
                                            self.autocast, codes=codes)
        sums[1] += d_loss
        sums[3] += d_acc
        sums[2] += generator_phase(None, self.discriminator, self.optimizers["generator"], x, self.autocast,
                                   codes=codes)

    def train_batch(self, train_images, index, sums):
        """train_step on train_images[index]: replayed as a CUDA graph when enabled and the batch is full."""
        if self.cuda_graphs and len(index) == self.cfg.batch_size:
            if self._graphed is None or self._graphed.images is not train_images:
                self._graphed = GraphedStep(self, train_images)
            self._graphed(index, sums)
        else:
            self.train_step(as_float(train_images[index]), sums)

    def run_epoch(self, train_images, should_stop, progress):
        """One pass over the training split in a fresh random order; returns the mean losses.

        Raises Interrupted (after saving progress into self.partial) when should_stop() turns true.
        """
        n, b = len(train_images), self.cfg.batch_size
        if self.partial is None:
            start_state = self.data_rng.get_state()
            order = torch.randperm(n, generator=self.data_rng)
            first, sums = 0, torch.zeros(4, device=self.device, dtype=torch.float64)
        else:  # resuming inside an epoch: redraw its order, skip the steps already taken
            start_state = self.partial["data_rng"]
            self.data_rng.set_state(start_state)
            order = torch.randperm(n, generator=self.data_rng)
            first, sums = self.partial["step_in_epoch"], self.partial["sums"].to(self.device)
            self.partial = None
        # this rank's shard; all of the same length, so that every rank takes as many steps
        order = order[: n - n % self.world_size][self.rank :: self.world_size].to(self.device)
        n_steps = math.ceil(len(order) / b)
        self.encoder.train(), self.decoder.train(), self.discriminator.train()
        bar = progress(total=n_steps, initial=first, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}")
        for i in range(first, n_steps):
            self.train_batch(train_images, order[i * b : (i + 1) * b], sums)
            self.step += 1
            bar.update(1)
            if should_stop() and i + 1 < n_steps:
                bar.close()
                self.partial = {"data_rng": start_state, "step_in_epoch": i + 1, "sums": sums.cpu()}
                raise Interrupted()
        bar.close()
        if self.world_size > 1:  # every rank logs, and stops on a non-finite loss, on the same figures
            torch.distributed.all_reduce(sums)
            sums /= self.world_size
        means = (sums / n_steps).tolist()  # the one host synchronisation of the epoch
        return dict(zip(("reconstruction", "discriminator", "generator", "disc_accuracy"), means))

    def fit(self, data, save=None, log=print, should_stop=lambda: False, progress=None, evaluate=None):
        """Train until cfg.epochs epochs are complete.

        data: a `data.Dataset`; save(trainer): called after every epoch and on interruption;
        evaluate(trainer) -> dict: extra figures for this epoch's history row, or None.
        """
        progress = progress or _no_progress
        train_images = data.train.images.to(self.device)
        test_images = data.test.images.to(self.device)
        while self.epoch < self.cfg.epochs:
            started = time.perf_counter()
            self.set_learning_rates()
            try:
                losses = self.run_epoch(train_images, should_stop, progress)
            except Interrupted:
                if save is not None:
                    save(self)
                raise
            for phase in PHASES:
                if not math.isfinite(losses[phase]):
                    raise NonFiniteLoss(phase, self.epoch + 1)
            self.epoch += 1
            row = {
                "epoch": self.epoch,
                # summed over the 784 pixels: nats per image, comparable with the test figure
                "recon_loss": losses["reconstruction"] * self.model_cfg.image_size,
                "disc_loss": losses["discriminator"],
                "gen_loss": losses["generator"],
                "disc_accuracy": losses["disc_accuracy"],
                "test_recon_bce": self.test_reconstruction(test_images),
            }
            if evaluate is not None:
                row.update(evaluate(self) or {})
            row["seconds"] = time.perf_counter() - started
            self.history.append(row)
            if self.rank == 0:
                log(format_row(row, self.cfg.epochs))
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
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", float(group["lr"]))
                lr = group["initial_lr"] * factor
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                elif self.cuda_graphs and self.cfg.lr_decay != "none":
                    group["lr"] = torch.tensor(lr, device=self.device)
                else:
                    group["lr"] = lr

    def test_reconstruction(self, test_images):
        """Mean summed BCE per test image (nats); a method so that a mode can decode with labels."""
        return test_reconstruction(self.encoder, self.decoder, test_images, autocast=self.autocast)

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self):
        """Everything that decides the rest of the run; loadable with torch.load(weights_only=True)."""
        rng = {"torch": torch.get_rng_state(), "data": self.data_rng.get_state(), "prior": self.prior_rng.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format_version": FORMAT_VERSION,
            "model_config": asdict(self.model_cfg),
            "train_config": asdict(self.cfg),
            "encoder": self.encoder.state_dict(),
            "decoder": self.decoder.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizers": {name: portable_state(opt) for name, opt in self.optimizers.items()},
            "epoch": self.epoch,
            "step": self.step,
            "partial_epoch": self.partial,
            "history": self.history,
            "rng": rng,
        }

    def load_state_dict(self, ckpt):
        self.encoder.load_state_dict(ckpt["encoder"])
        self.decoder.load_state_dict(ckpt["decoder"])
        self.discriminator.load_state_dict(ckpt["discriminator"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
            for group in opt.param_groups:  # load_state_dict brings back the saving run's setting
                group["capturable"] = self.cuda_graphs
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.history = list(ckpt["history"])
        self.partial = ckpt["partial_epoch"]
        rng = ckpt["rng"]
        torch.set_rng_state(rng["torch"])
        self.data_rng.set_state(rng["data"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        try:
            self.prior_rng.set_state(rng["prior"])
        except RuntimeError:  # saved on another device type: the stream differs from here on
            self.prior_rng.manual_seed(self.cfg.seed + 2 + self.step)


def portable_state(optimizer):
    """optimizer.state_dict() with a learning rate kept as a device tensor (CUDA graphs) saved as a number."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:  # copies of the optimiser's groups
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = group["lr"].item()
    return state


RANK_SEED_STRIDE = 10_000  # rank r seeds its dropout and prior draws with seed + r * this: far from seed + 1, + 2


class _Logits(nn.Module):
    """A decoder's logits as a forward(), which is what DDP wraps."""

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z):
        return self.decoder.logits(z)


class GraphedStep:
    """Trainer.train_step on a full batch, captured once as a CUDA graph and replayed.

    At batch 100 a step is a few hundred small kernels; launching them one by one from Python takes
    longer than running them. The graph replays forward, backward and fused Adam of all three phases
    from one launch. Its inputs are static buffers: the batch's indices into the images on the GPU,
    and prior samples, drawn outside the graph from the trainer's generator so that the prior stream
    is the eager one. Dropout draws from the default CUDA generator, which graphs support.

    The first `warmup` calls train eagerly on a side stream, as capture needs (optimizer state,
    cuBLAS workspaces): every call is a real training step. If capture fails, it says why on stderr
    and trains eagerly from then on.
    """

    def __init__(self, trainer, images, warmup=3):
        t = trainer
        self.trainer, self.images, self.warmup = t, images, warmup
        self.index = torch.zeros(t.cfg.batch_size, dtype=torch.long, device=t.device)
        self.z_prior = torch.zeros(t.cfg.batch_size, t.model_cfg.latent_dim, device=t.device)
        self.graph, self.losses, self.failed = None, None, None

    def _step(self):
        sums = torch.zeros(4, device=self.trainer.device, dtype=torch.float64)
        self.trainer.train_step(as_float(self.images[self.index]), sums, self.z_prior)
        return sums

    def __call__(self, index, sums):
        self.index.copy_(index)
        self.z_prior.copy_(self.trainer.sample_prior(len(index)))
        if self.graph is None and self.failed is None:
            if self.warmup > 0:
                self.warmup -= 1
                side, main = torch.cuda.Stream(self.trainer.device), torch.cuda.current_stream(self.trainer.device)
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


LOG_COLUMNS = ("epoch", "recon_loss", "disc_loss", "gen_loss", "disc_accuracy", "test_recon_bce", "seconds")


class _no_progress:
    def __init__(self, **kwargs):
        pass

    def update(self, n):
        pass

    def close(self):
        pass
