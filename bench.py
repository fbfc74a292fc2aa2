"""Training speed of this trainer, side by side with a faithful re-implementation of the original's loop.

    python bench.py                              # CPU: batch 100 and 1000, fp32 and bf16 (a few minutes)
    python bench.py --device cuda --profile      # GPU: eager and CUDA graphs, checks, profile (~2 min)
    python bench.py --profile --no_memory        # + torch.profiler's top rows of our step
    python bench.py --batch_sizes 100 --precisions fp32 --rounds 9
    python bench.py --modes eager blas           # + our step with torch's default products, not oneDNN's

Prints, for this machine: samples/s, seconds per 60,000-image epoch, peak memory, and each loop's
ratio to the original loop at the same batch size (the original has no bf16: bf16 rows are compared
with its fp32). The data are synthetic, of MNIST's shape (60,000 uint8 28x28 images), so it runs
anywhere. Nothing trains to the end: each loop runs a few steps per round and the seconds per epoch
are extrapolated from the median round. The loops take their rounds in turn, in one process, so
load from other programs on a shared machine hits them alike; the load average is printed too.

"ours" is the real code path, Trainer.run_epoch (stopped and resumed between rounds through its own
interrupt machinery). "original" re-implements the loop this project replaces: a torchvision
DataLoader of PIL images through ToTensor, Q/P/D networks with sigmoid outputs and the same sizes,
four Adam optimisers (decoder, encoder, encoder-as-generator, discriminator), gradients zeroed once
per step, the encoder's gradient computed in the discriminator phase and the discriminator's in the
generator phase for nothing, two discriminator forwards, and a .item() per loss per step.

CPU memory is the peak RSS of a fresh process running that loop on the full 60,000 images (--no_memory
skips it); GPU memory is the loop's own peak of allocated device memory.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

import metrics
import models
import train
from data import Dataset, Split, load_dataset, to_float
from models import ModelConfig
from train import Interrupted, Trainer, TrainConfig
from utils import rss_mb

N_IMAGES = 60_000
LATENT = ModelConfig().latent_dim


def synthetic_images(device="cpu", n=N_IMAGES, seed=0):
    """uint8 [n, 28, 28]: the shape and type of MNIST's training split."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g).to(device)


# -- the original's loop ----------------------------------------------------------------------------


class _PILImages(torch.utils.data.Dataset):
    """What torchvision's MNIST dataset does per item: a PIL image from the uint8 array, then the transform."""

    def __init__(self, images):
        import torchvision.transforms as T

        self.images, self.transform = images, T.ToTensor()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i].numpy(), mode="L")), 0


class _Q(nn.Module):  # encoder
    def __init__(self, cfg):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(cfg.image_size, cfg.hidden_dim), nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.lin3 = nn.Linear(cfg.hidden_dim, cfg.latent_dim)
        self.p = cfg.dropout

    def forward(self, x):
        x = F.relu(F.dropout(self.lin1(x), self.p, self.training))
        x = F.relu(F.dropout(self.lin2(x), self.p, self.training))
        return self.lin3(x)


class _P(nn.Module):  # decoder, sigmoid output
    def __init__(self, cfg):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(cfg.latent_dim, cfg.hidden_dim), nn.Linear(cfg.hidden_dim, cfg.hidden_dim)
        self.lin3 = nn.Linear(cfg.hidden_dim, cfg.image_size)
        self.p = cfg.dropout

    def forward(self, z):
        z = F.relu(F.dropout(self.lin1(z), self.p, self.training))
        z = F.relu(F.dropout(self.lin2(z), self.p, self.training))
        return torch.sigmoid(self.lin3(z))


class _D(nn.Module):  # discriminator, sigmoid output
    def __init__(self, cfg):
        super().__init__()
        n = cfg.dis_hidden_dim
        self.lin1, self.lin2, self.lin3 = nn.Linear(cfg.latent_dim, n), nn.Linear(n, n), nn.Linear(n, 1)
        self.p = cfg.dis_dropout

    def forward(self, z):
        z = F.relu(F.dropout(self.lin1(z), self.p, self.training))
        z = F.relu(F.dropout(self.lin2(z), self.p, self.training))
        return torch.sigmoid(self.lin3(z))


class OriginalLoop:
    """The original's training loop, step by step (see the module docstring for what it wastes)."""

    EPS = 1e-15

    def __init__(self, images, batch_size, device, cfg=ModelConfig(), gen_lr=6e-4, dis_lr=8e-4):
        torch.manual_seed(0)
        self.Q, self.P, self.D = (net(cfg).to(device) for net in (_Q, _P, _D))
        self.optim_P = torch.optim.Adam(self.P.parameters(), lr=gen_lr)
        self.optim_Q_enc = torch.optim.Adam(self.Q.parameters(), lr=gen_lr)
        self.optim_Q_gen = torch.optim.Adam(self.Q.parameters(), lr=dis_lr)
        self.optim_D = torch.optim.Adam(self.D.parameters(), lr=dis_lr)
        self.loader = torch.utils.data.DataLoader(_PILImages(images.cpu()), batch_size=batch_size, shuffle=True)
        self.batches, self.device, self.latent = iter(self.loader), device, cfg.latent_dim

    def steps(self, k):
        for _ in range(k):
            try:
                images, _ = next(self.batches)
            except StopIteration:  # a new epoch
                self.batches = iter(self.loader)
                images, _ = next(self.batches)
            self.step(images.view(images.size(0), -1).to(self.device))
        return k

    def step(self, x):
        Q, P, D, eps = self.Q, self.P, self.D, self.EPS
        P.zero_grad(), Q.zero_grad(), D.zero_grad()
        recon_loss = F.binary_cross_entropy(P(Q(x)) + eps, x + eps)
        recon_loss.backward()
        self.optim_P.step(), self.optim_Q_enc.step()

        Q.eval()
        z_real = (torch.randn(x.size(0), self.latent) * 5.0).to(self.device)
        D_real, D_fake = D(z_real), D(Q(x))
        D_loss = -torch.mean(torch.log(D_real + eps) + torch.log(1 - D_fake + eps))
        D_loss.backward()
        self.optim_D.step()

        Q.train()
        G_loss = -torch.mean(torch.log(D(Q(x)) + eps))
        G_loss.backward()
        self.optim_Q_gen.step()
        return recon_loss.item(), D_loss.item(), G_loss.item()


# -- our loop -------------------------------------------------------------------------------------


class OurLoop:
    """Trainer.run_epoch itself, k steps at a time: stopped through should_stop, resumed mid-epoch.

    onednn=False: with torch's default products instead of oneDNN's (models.use_onednn).
    """

    def __init__(self, images, batch_size, device, precision="fp32", cuda_graphs=False, seed=0,
                 model_cfg=ModelConfig(), onednn=True):
        cfg = TrainConfig(batch_size=batch_size, precision=precision, seed=seed)
        self.trainer = Trainer(model_cfg, cfg, device, cuda_graphs=cuda_graphs)
        for net in self.trainer.model.nets.values():
            models.use_onednn(net, onednn)
        self.images = images

    def steps(self, k):
        t, start = self.trainer, self.trainer.step
        while t.step - start < k:  # into the next epoch when this one ends first
            try:
                t.run_epoch(self.images, lambda: t.step - start >= k, train._no_progress)
            except Interrupted:
                pass
        return t.step - start


# -- timing ---------------------------------------------------------------------------------------


class Config:
    def __init__(self, loop, batch, precision, step):
        self.loop, self.batch, self.precision, self.step = loop, batch, precision, step  # step: eager, graphs or blas
        self.runner, self.rounds, self.cpu_rounds, self.peak, self.error = None, [], [], None, None

    @property
    def name(self):
        return f"{self.loop} b{self.batch} {self.precision} {self.step}"

    @property
    def samples_per_s(self):
        return self.batch * statistics.median(self.rounds) if self.rounds else math.nan

    @property
    def best_samples_per_s(self):  # the least disturbed round
        return self.batch * max(self.rounds) if self.rounds else math.nan

    @property
    def samples_per_cpu_s(self):
        return self.batch * statistics.median(self.cpu_rounds) if self.cpu_rounds else math.nan


def build(c, images, device):
    if c.loop == "original":
        return OriginalLoop(images, c.batch, device)
    return OurLoop(images, c.batch, device, c.precision, cuda_graphs=c.step == "graphs", onednn=c.step != "blas")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(c, k, device):
    """Steps per wall second and per CPU second of k steps of c's loop."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    done = c.runner.steps(k)
    sync(device)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return done / wall, done / max(cpu, 1e-9)


def measure(configs, images, device, rounds, round_seconds, log):
    """Build and warm up every loop, then time them in interleaved rounds of ~round_seconds each."""
    steps_per_round = {}
    # CUDA graphs last: a capture that failed badly could spoil the CUDA context for whatever comes after
    for c in sorted(configs, key=lambda c: c.step == "graphs"):
        try:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            c.runner = build(c, images, device)
            c.runner.steps(5)  # warm-up; CUDA graphs are captured after 3 eager steps
            rate = max(timed(c, 2, device)[0] for _ in range(3))
            steps_per_round[c.name] = max(2, round(rate * round_seconds))
            if device.type == "cuda":
                c.peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
            log(f"  ready: {c.name:32s} {steps_per_round[c.name]:4d} steps a round")
        except Exception as e:  # one loop failing must not lose the others' figures
            c.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"  FAILED to start {c.name}: {c.error}")
    live = [c for c in configs if c.error is None]
    for r in range(rounds):
        for c in live[r % len(live):] + live[: r % len(live)] if live else []:  # rotate who goes first
            if c.error is not None:
                continue
            try:
                wall_rate, cpu_rate = timed(c, steps_per_round[c.name], device)
                c.rounds.append(wall_rate), c.cpu_rounds.append(cpu_rate)
            except Exception as e:
                c.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                log(f"  FAILED in round {r + 1}: {c.name}: {c.error}")
        rates = " | ".join(f"{c.name} {c.batch * c.rounds[-1]:,.0f}/s" for c in live if c.rounds)
        log(f"  round {r + 1}/{rounds}, load average {os.getloadavg()[0]:.1f}: {rates}")  # in case the run dies


# -- memory of a full-size run on the CPU: one fresh process per loop --------------------------------


def probe(spec, threads):
    """Run in a fresh process: peak RSS of `spec`'s loop over the full 60,000 images."""
    loop, batch, precision = spec.split(":")
    if threads:
        torch.set_num_threads(threads)
    base = rss_mb()
    images = synthetic_images()
    with_data = rss_mb()
    c = Config(loop, int(batch), precision, "eager")
    c.runner = build(c, images, torch.device("cpu"))
    c.runner.steps(max(3, 2000 // int(batch)))
    print(json.dumps({"base_mb": base, "data_mb": with_data - base, "peak_mb": rss_mb("VmHWM")}))


def memory_probes(configs, threads, log):
    for c in configs:
        if c.error is not None:
            continue
        command = [sys.executable, __file__, "--_probe", f"{c.loop}:{c.batch}:{c.precision}"]
        command += ["--threads", str(threads)] if threads else []
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
            figures = json.loads(out.stdout.strip().splitlines()[-1])
            c.peak = figures["peak_mb"]
            log(f"  memory: {c.name:32s} peak RSS {figures['peak_mb']:.0f} MB = {figures['base_mb']:.0f} MB Python "
                f"and torch + {figures['data_mb']:.0f} MB data + "
                f"{figures['peak_mb'] - figures['base_mb'] - figures['data_mb']:.0f} MB training")
        except Exception as e:
            log(f"  memory probe failed for {c.name}: {type(e).__name__}: {e}")


# -- CUDA checks ----------------------------------------------------------------------------------


def check_graphs_match_eager(images, device, precision, steps, log):
    """The same seeded run, eager and as CUDA graphs: how far apart are the weights after `steps` steps?"""
    runs = {}
    for step in ("eager", "graphs"):
        loop = OurLoop(images, 100, device, precision, cuda_graphs=step == "graphs")
        loop.steps(steps)
        sync(device)
        runs[step] = loop.trainer
    g = runs["graphs"]._graphed
    used = "replayed" if g is not None and g.graph is not None else f"NOT used ({g.failed if g else 'never built'})"
    worst, scale = 0.0, 0.0
    for name in ("encoder", "decoder", "discriminator"):
        a, b = runs["eager"].model.nets[name].state_dict(), runs["graphs"].model.nets[name].state_dict()
        for k in a:
            worst = max(worst, (a[k] - b[k]).abs().max().item())
            scale = max(scale, a[k].abs().max().item())
    identical = worst == 0.0
    log(f"  graphs vs eager, {precision}, {steps} steps from one seed: graph {used}; max |w_graph - w_eager| = "
        f"{worst:.3g} (largest |w| {scale:.3g}){' -- bit-identical' if identical else ''}")


def fit_epochs(images, device, epochs, log):
    """Trainer.fit end to end, default and fast configurations (CUDA graphs where on CUDA, test
    evaluation after each epoch, no checkpoint writing): the seconds an epoch really takes."""

    labels = torch.zeros(N_IMAGES, dtype=torch.int64)
    data = Dataset("synthetic", Split(images.cpu(), labels), Split(synthetic_images(n=10_000, seed=1), labels[:10_000]))
    histories = {}
    for name, cfg in (parse_run("default", epochs), parse_run(FAST, epochs)):
        cfg = replace(cfg, epochs=epochs)
        t = Trainer(ModelConfig(), cfg, device, cuda_graphs=True)
        t.fit(data, log=lambda line: None)
        seconds = ", ".join(f"{r['seconds']:.2f}" for r in t.history)
        log(f"  fit, {name} (batch {cfg.batch_size} {cfg.precision}): seconds per epoch {seconds} "
            f"(60,000 training images + 10,000-image test evaluation; the first includes warm-up and capture)")
        histories[name] = t.history
    return histories


def profile(images, device, precision, batch, log, rows=15, steps=20):
    from torch.profiler import ProfilerActivity, profile as torch_profile

    loop = OurLoop(images, batch, device, precision)
    loop.steps(5)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities, record_shapes=True) as p:
        loop.steps(steps)
        sync(device)
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    log(f"\ntorch.profiler, our step, {device.type} {precision} batch {batch}, {steps} steps, sorted by {sort}:")
    log(p.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=55))
    if device.type == "cpu":
        log(matrix_products(p.key_averages(group_by_input_shape=True), steps, large_product_gflops()))


def large_product_gflops(n=2000, repeats=3):
    """This machine's GFLOP/s on an n x n fp32 matrix product: what the step's products are measured against."""
    big = torch.rand(n, n)
    big @ big
    started = time.perf_counter()
    for _ in range(repeats):
        big @ big
    return repeats * 2 * n**3 / (time.perf_counter() - started) / 1e9


# the profiler's matrix-product ops: a short name, and how to read the shapes [M, K] x [K, N] from their inputs
PRODUCTS = {
    "aten::mm": ("mm", lambda shapes: shapes[:2]),
    "aten::addmm": ("addmm", lambda shapes: shapes[1:3]),  # (bias, a, b, ...)
    "mkldnn::_linear_pointwise": ("onednn", lambda shapes: (shapes[0], shapes[1][::-1])),  # (x, weight [N, K], ...)
}


def matrix_products(averages, steps, peak):
    """A table of the step's matrix products by shape: calls a step, time, GFLOP/s and share, against `peak`,
    the GFLOP/s of a 2000 x 2000 product. For the CPU, where their self time is their run time."""
    rows = {}  # "op [M, K] x [K, N]" -> [calls, ms, flop]; oneDNN's forward and input gradient can share a row
    for e in averages:
        if e.key not in PRODUCTS or not e.input_shapes:
            continue
        name, shapes = PRODUCTS[e.key]
        a, b = shapes(e.input_shapes)
        if len(a) != 2 or len(b) != 2:
            continue
        row = rows.setdefault(f"{name:6s} [{a[0]}, {a[1]}] x [{b[0]}, {b[1]}]", [0, 0.0, 0.0])
        row[0] += e.count
        row[1] += e.self_cpu_time_total / 1e3
        row[2] += 2 * a[0] * a[1] * b[1] * e.count
    total_ms, total_flop = sum(r[1] for r in rows.values()), sum(r[2] for r in rows.values())
    out = [f"\nmatrix products by shape (a step; GFLOP/s under the profiler; a 2000 x 2000 product runs at "
           f"{peak:.0f} GFLOP/s here):",
           f"{'op and shapes':34s} {'calls':>5s} {'ms':>7s} {'GFLOP/s':>8s} {'of products':>11s}"]
    out += [f"{name:34s} {calls / steps:5.0f} {ms / steps:7.2f} {flop / ms / 1e6:8.1f} {ms / total_ms:10.1%}"
            for name, (calls, ms, flop) in sorted(rows.items(), key=lambda item: -item[1][1])]
    out.append(f"{'all':34s} {'':5s} {total_ms / steps:7.2f} {total_flop / total_ms / 1e6:8.1f}")
    return "\n".join(out)


# -- time to quality: whole runs on real data ------------------------------------------------------

# The defaults in bf16 for 38 epochs with a cosine learning-rate decay: a candidate for the default's 100-epoch
# test reconstruction and Parzen figures in far less time (`bench.py --quality` measures it; docs/performance.md)
FAST = "fast:precision=bf16,epochs=38,lr_decay=cosine"


def parse_run(text, epochs):
    """'name' or 'name:key=value,...' (TrainConfig fields) -> (name, TrainConfig)."""
    name, _, spec = text.partition(":")
    fields = {"epochs": epochs}
    types = {f: type(v) for f, v in vars(TrainConfig()).items()}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"bench.py: error: --quality {text}: {key} is not a TrainConfig field")
        fields[key] = types[key](value)
    return name, TrainConfig(**fields)


@torch.no_grad()
def parzen(trainer, data, n_samples=10_000, n_validation=1_000):
    """Parzen-window log-likelihood of the test split under decoded prior samples (sigma chosen on
    n_validation training images), the protocol of metrics.parzen_estimate."""
    model = trainer.model
    z = model.sample_prior(n_samples, generator=torch.Generator(trainer.device).manual_seed(1234))
    samples = model.decode(z).flatten(1)
    validation = to_float(data.train.images[-n_validation:]).flatten(1).to(trainer.device)
    return metrics.parzen_estimate(samples, validation, to_float(data.test.images).flatten(1).to(trainer.device))


def time_to_quality(runs, data, device, log):
    """Train each run from scratch; the first is the reference the others are measured against."""
    results = []
    for name, cfg in runs:
        log(f"\n{name}: {cfg.epochs} epochs, batch {cfg.batch_size}, gen_lr {cfg.gen_lr:g}, dis_lr {cfg.dis_lr:g}, "
            f"lr_decay {cfg.lr_decay}, {cfg.precision}, seed {cfg.seed}")
        t = Trainer(ModelConfig(), cfg, device, cuda_graphs=True)
        t.fit(data, log=lambda line: log("  " + line))
        wall = [sum(r["seconds"] for r in t.history[: i + 1]) for i in range(len(t.history))]
        results.append((name, cfg, t.history, wall, parzen(t, data)))
        log(f"  Parzen log-likelihood of the test split: {results[-1][4]['mean']:.1f} +- {results[-1][4]['sem']:.1f} nats")
    ref_name, _, ref_history, ref_wall, ref_parzen = results[0]
    target = ref_history[-1]["test_recon_bce"]
    log(f"\ntime to quality: {ref_name} ends at test reconstruction {target:.2f} nats, Parzen "
        f"{ref_parzen['mean']:.1f} nats, after {ref_wall[-1]:.0f} s")
    for name, cfg, history, wall, pz in results[1:]:
        reached = next((i for i, r in enumerate(history) if r["test_recon_bce"] <= target), None)
        when = (f"reaches {target:.2f} at epoch {reached + 1}, after {wall[reached]:.0f} s = "
                f"{wall[reached] / ref_wall[-1]:.2f} of {ref_name}'s time" if reached is not None
                else f"never reaches {target:.2f}")
        log(f"  {name}: {when}; ends at {history[-1]['test_recon_bce']:.2f} nats and Parzen {pz['mean']:.1f} "
            f"nats after {wall[-1]:.0f} s = {wall[-1] / ref_wall[-1]:.2f} of {ref_name}'s time")
    return results


# -- the report -----------------------------------------------------------------------------------


def table(configs, device):
    """Median and best round of each loop; ratios to the original loop at the same batch size."""
    original = {c.batch: c for c in configs if c.loop == "original" and c.rounds}
    memory = "peak RSS" if device.type == "cpu" else "GPU peak"
    head = (f"{'loop':8s} {'batch':>5s} {'prec.':5s} {'mode':6s} {'samples/s':>10s} {'s/epoch':>8s} {'x orig.':>7s}   "
            f"{'best/s':>8s} {'s/epoch':>8s} {'x orig.':>7s} {memory:>9s}")
    lines = [f"{'':28s} {'--- median round ---':>27s}   {'---- best round ----':>25s}", head, "-" * len(head)]
    for c in configs:
        if c.error is not None and not c.rounds:
            lines.append(f"{c.loop:8s} {c.batch:5d} {c.precision:5s} {c.step:6s} failed: {c.error}")
            continue
        base = original.get(c.batch)
        ratio = c.samples_per_s / base.samples_per_s if base else math.nan
        best_ratio = c.best_samples_per_s / base.best_samples_per_s if base else math.nan
        peak = f"{c.peak:6.0f} MB" if c.peak is not None else "--"
        lines.append(f"{c.loop:8s} {c.batch:5d} {c.precision:5s} {c.step:6s} {c.samples_per_s:10,.0f} "
                     f"{N_IMAGES / c.samples_per_s:8.1f} {ratio:7.2f}   {c.best_samples_per_s:8,.0f} "
                     f"{N_IMAGES / c.best_samples_per_s:8.1f} {best_ratio:7.2f} {peak:>9s}")
    return "\n".join(lines)


def describe_machine(device, threads):
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {threads or torch.get_num_threads()} threads"


def build_parser():
    p = argparse.ArgumentParser(description="Training speed: this trainer against the original's loop.")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[100, 1000],
                   help="default: 100, the batch of the default and fast configurations, and 1000")
    p.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    p.add_argument("--modes", nargs="+", choices=("eager", "graphs", "blas"), default=None,
                   help="our loop's step: eager launches and/or CUDA graphs (default: both on CUDA); blas: eager "
                        "with torch's default fp32 products instead of oneDNN's on the CPU (default: eager)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per loop; median and best are reported")
    p.add_argument("--round_seconds", type=float, default=None, help="length of a round (default: 1.5 CPU, 0.5 GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no_original", action="store_true", help="skip the original loop")
    p.add_argument("--no_memory", action="store_true", help="CPU: skip the peak-RSS probes (a process per loop)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top rows of our step")
    p.add_argument("--fit_epochs", type=int, default=None,
                   help="then run Trainer.fit for this many full epochs (default: 2 on CUDA, 0 on the CPU)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--quality", nargs="+", metavar="RUN", default=None,
                   help="instead: train whole runs on real data and compare their wall time and quality; "
                        "RUN is NAME or NAME:field=value,... of TrainConfig, the first is the reference, e.g. "
                        f"--quality default {FAST}")
    p.add_argument("--dataset", default="fashion-mnist", help="--quality: data set (see main.py --dataset)")
    p.add_argument("--directory", default="/usr/share/datasets/fashion-mnist", help="--quality: its folder")
    p.add_argument("--epochs", type=int, default=100, help="--quality: epochs of runs that do not set their own")
    p.add_argument("--watchdog", type=float, default=None,
                   help="after this many seconds, print every thread's stack and exit (a hung run says where)")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.watchdog:
        import faulthandler

        faulthandler.dump_traceback_later(args.watchdog, exit=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._probe:
        return probe(args._probe, args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
        return 1

    def log(line=""):
        print(line, flush=True)

    if args.quality:
        log(f"bench.py --quality on {describe_machine(device, args.threads)}; load average {os.getloadavg()[0]:.1f}")
        data = load_dataset(args.dataset, args.directory)
        time_to_quality([parse_run(r, args.epochs) for r in args.quality], data, device, log)
        return 0
    modes = args.modes or (["eager", "graphs"] if device.type == "cuda" else ["eager"])
    configs = []
    for b in args.batch_sizes:
        if not args.no_original:
            configs.append(Config("original", b, "fp32", "eager"))
        # blas differs from eager in fp32 CPU products only
        configs += [Config("ours", b, p, m) for p in args.precisions for m in modes if m != "blas" or p == "fp32"]
    round_seconds = args.round_seconds or (1.0 if device.type == "cpu" else 0.4)
    log(f"bench.py on {describe_machine(device, args.threads)}; load average {os.getloadavg()[0]:.1f} "
        f"({os.cpu_count()} cores)")
    log(f"{len(configs)} loops, {args.rounds} interleaved rounds of ~{round_seconds} s each, synthetic MNIST-shaped data")
    started = time.perf_counter()
    images = synthetic_images(device)
    measure(configs, images, device, args.rounds, round_seconds, log)
    load_after = os.getloadavg()
    if device.type == "cpu" and not args.no_memory:
        memory_probes(configs, args.threads, log)

    extra = {}
    if device.type == "cuda":
        for precision in args.precisions:
            try:
                check_graphs_match_eager(images, device, precision, 50, log)
            except Exception as e:
                log(f"  graphs vs eager check failed ({precision}): {type(e).__name__}: {e}")
    fit_epochs_n = args.fit_epochs if args.fit_epochs is not None else (2 if device.type == "cuda" else 0)
    if fit_epochs_n:
        try:
            extra["fit"] = fit_epochs(images, device, fit_epochs_n, log)
        except Exception as e:
            log(f"  fit failed: {type(e).__name__}: {e}")
    if args.profile:
        try:
            profile(images, device, args.precisions[0], args.batch_sizes[0], log)
        except Exception as e:
            log(f"  profile failed: {type(e).__name__}: {e}")

    log(f"\n{describe_machine(device, args.threads)}")
    log(f"load average (1, 5, 15 min) after timing: {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} "
        f"on {os.cpu_count()} cores; {time.perf_counter() - started:.0f} s in all")
    log(f"s/epoch = 60,000 images / samples/s of the median (best) of {args.rounds} rounds: extrapolated, not a "
        "full epoch; x orig. = ours / the original loop at the same batch size (bf16 rows: / its fp32)\n")
    log(table(configs, device))
    for c in configs:
        if c.loop == "ours" and c.batch == 100 and c.rounds:
            log(f"100 epochs at batch 100, {c.precision} {c.step}: {100 * N_IMAGES / c.samples_per_s:,.0f} s "
                "of training steps")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": describe_machine(device, args.threads), "load_after": load_after, **extra,
                       "loops": [{"loop": c.loop, "batch": c.batch, "precision": c.precision, "mode": c.step,
                                  "samples_per_s": c.samples_per_s, "samples_per_cpu_s": c.samples_per_cpu_s,
                                  "rounds": c.rounds, "peak_mb": c.peak, "error": c.error} for c in configs]},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
