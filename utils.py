"""Saving, loading and drawing: what you need to use trained AAE weights.

    import utils
    trained = utils.load_models("weights/aae.pt")       # or the folder "weights"
    codes = trained.encoder(images)                     # floats in [0, 1], [N, 1, 28, 28] or [N, 784]
    images = trained.decoder(codes)                     # [N, 1, 28, 28] in [0, 1]
    z = trained.sample_prior(64)                        # the prior the model was trained towards
    utils.save_grid(trained.decoder(z), "samples.png")

Checkpoints are written atomically (temp file in the same folder, fsync, os.replace), so an
interrupted or failed save never destroys the previous one. Pictures are PNGs without axes,
except the loss curves.
"""

import csv
import errno
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import data
from models import CATEGORICAL, ModelConfig, build_models

CHECKPOINT_NAME = "aae.pt"
LOG_NAME = "log.csv"


class CheckpointError(Exception):
    """A weights file that cannot be used; str(e) is one line that says what to do."""


class SaveError(Exception):
    """A file could not be written; the previous version, if any, is intact."""


def choose_device(name="auto"):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    return torch.device(name)


# -- writing files atomically ---------------------------------------------------------------------


def rss_mb(field="VmRSS"):
    """This process's resident memory (VmRSS) or its peak so far (VmHWM), in MB (Linux). Not getrusage's
    ru_maxrss: Linux carries that over from the parent through fork and exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def peak_memory(device):
    """'peak memory: ...' of this process so far: resident set size, and the CUDA allocator's peak on a GPU."""
    try:
        text = f"peak memory: {rss_mb('VmHWM'):,.0f} MB resident"
    except OSError:  # no /proc: not Linux
        text = "peak memory: resident size not known here"
    if torch.device(device).type == "cuda":
        text += f", {torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MB on the GPU"
    return text


def atomic_write(path, write):
    """Call write(file) on a temp file beside `path`, fsync it, then move it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            reason = "no space left on the device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise SaveError(f"could not write {path}: {reason}; the previous file, if any, is unchanged") from None
        raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(state, path):
    atomic_write(path, lambda f: torch.save(state, f))


def write_csv(rows, path):
    """The training history as a CSV, one row per epoch; rewritten whole, atomically."""
    columns = list(dict.fromkeys(k for row in rows for k in row))

    def write(f):
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        f.write(text.getvalue().encode())

    atomic_write(path, write)


def read_csv(path):
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def check_writable(folder, flag="--weights"):
    """Create `folder` if needed and prove a file can be written there, before any training."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise SaveError(f"the {flag} folder {folder} is not writable ({e.strerror or e}); choose another with {flag}")


# -- reading checkpoints --------------------------------------------------------------------------

REQUIRED_KEYS = ("format_version", "model_config", "encoder", "decoder", "discriminator")


def checkpoint_path(path):
    """A checkpoint file, given it or the folder that holds it."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict at `path` (file or weights folder), or CheckpointError saying why not."""
    from train import FORMAT_VERSION  # lazy: utils sits below train

    path = checkpoint_path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one first (python main.py ...) or pass --weights DIR")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty; it is not a checkpoint (delete it, or retrain)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, unsafe types: all mean "not ours"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:  # torch's long advice, with terminal escapes, is not for this file
            first = "it holds something other than tensors and plain values, which weights_only loading refuses"
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:120]}); it may be truncated or another kind of file") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is a torch file but not an AAE checkpoint written by this program")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {ckpt['format_version']}, this program reads format {FORMAT_VERSION}"
        )
    check_fits(path, ckpt)
    return ckpt


def check_fits(path, ckpt):
    """CheckpointError unless the networks of ckpt's model_config have exactly its tensors' names and shapes.

    They are built on the meta device, so a garbled size costs no memory (a real build could ask
    for gigabytes).
    """
    for key in ("model_config", "train_config"):
        if not isinstance(ckpt.get(key, {}), dict):
            raise CheckpointError(f"{path}: its {key} is not a dict; the file is damaged or not from this program")
    try:
        with torch.device("meta"):
            cfg = model_config_from(ckpt)
            if cfg.mode in ("supervised", *CATEGORICAL):  # modes.py's networks
                import modes  # lazy: modes sits above utils

                nets = modes.networks_for(cfg, ckpt.get("train_config", {}))
            else:
                nets = build_models(cfg)
    except Exception as e:  # a size of the wrong type, a negative one...
        detail = " ".join(str(e).split())[:160]
        raise CheckpointError(f"{path}: its model_config cannot be built ({detail}); the file is damaged or not from "
                              "this program") from None
    for name, net in zip(("encoder", "decoder", "discriminator"), nets):
        want = {k: list(v.shape) for k, v in net.state_dict().items()}
        saved = ckpt[name] if isinstance(ckpt[name], dict) else {}
        have = {k: list(v.shape) for k, v in saved.items() if isinstance(v, torch.Tensor)}
        if have != want:
            wrong = [f"{k} is {have[k]} in the file, {want[k]} for the saved model_config" for k in want
                     if k in have and have[k] != want[k]]
            missing = [f"no tensor {k}" for k in want if k not in have]
            extra = [f"unexpected {k}" for k in have if k not in want]
            raise CheckpointError(f"{path}: the {name} weights do not fit the saved configuration "
                                  f"({(wrong + missing + extra)[0][:160]})")


def model_config_from(ckpt):
    known = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in ckpt["model_config"].items() if k in known})


@dataclass
class TrainedAAE:
    """The networks of a checkpoint in eval mode, with the configs they were trained under."""

    encoder: torch.nn.Module
    decoder: torch.nn.Module
    discriminator: torch.nn.Module
    config: ModelConfig
    train_config: dict
    history: list

    def sample_prior(self, n, generator=None):
        """n draws from the prior this model was trained towards, on the models' device (TrainConfig's default
        prior for a checkpoint that does not name one)."""
        import priors
        from train import TrainConfig  # lazy: utils sits below train

        prior = self.train_config.get("prior", TrainConfig.prior)
        device = next(self.decoder.parameters()).device
        params = {"std": self.train_config.get("prior_std", TrainConfig.prior_std)} if prior == "gaussian" else {}
        return priors.sample(prior, n, self.config.latent_dim, generator=generator, device=device, **params)


def load_models(path, device="cpu"):
    """Rebuild encoder, decoder and discriminator from a checkpoint (file or weights folder)."""
    ckpt = load_checkpoint(path, map_location=device)
    cfg = model_config_from(ckpt)
    if cfg.mode in CATEGORICAL:
        raise ValueError(f"{checkpoint_path(path)} holds a --mode {cfg.mode} model, whose encoder gives a category "
                         "and a style: load it with modes.load_trainer(path)")
    nets = build_models(cfg)
    for name, net in zip(("encoder", "decoder", "discriminator"), nets):
        net.load_state_dict(ckpt[name])  # load_checkpoint has checked that they fit
        net.to(device).eval()
    return TrainedAAE(*nets, cfg, ckpt.get("train_config", {}), ckpt.get("history", []))


# -- pictures -------------------------------------------------------------------------------------


def save_grid(images, path, nrow=10):
    """Images [N, 1, H, W] in [0, 1] as one PNG grid, no axes."""
    from torchvision.utils import save_image

    save_image(images.detach().float().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)


@torch.no_grad()
def interpolate(encoder, decoder, start, end, steps=10):
    """Decode the straight line between the codes of `start` and `end` images [P, 1, H, W].

    Returns [P, steps, 1, H, W]: row p walks from start[p]'s code to end[p]'s code.
    """
    za, zb = encoder(start), encoder(end)  # [P, latent]
    t = torch.linspace(0, 1, steps, device=za.device).view(1, steps, 1)
    z = za.unsqueeze(1) * (1 - t) + zb.unsqueeze(1) * t  # [P, steps, latent]
    images = decoder(z.flatten(0, 1))  # [P * steps, 1, H, W]
    return images.view(len(za), steps, *images.shape[1:])


def pick_pairs(labels, n_pairs, classes=None, generator=None):
    """Indices (a, b) of n_pairs image pairs: random ones, or class classes[0] -> classes[1]."""
    if classes is None:
        if 2 * n_pairs > len(labels):
            raise ValueError(f"--pairs {n_pairs} needs {2 * n_pairs} different test images and the test split has "
                             f"{len(labels)}: use --pairs {len(labels) // 2} or fewer, or --classes A B")
        order = torch.randperm(len(labels), generator=generator)
        return order[:n_pairs], order[n_pairs : 2 * n_pairs]
    ends = []
    for c in classes:
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            raise ValueError(f"class {c} does not occur in the test split")
        ends.append(idx[torch.randint(len(idx), (n_pairs,), generator=generator)])
    return ends[0], ends[1]


def image_batch(images, image_shape):
    """Floats [N, C, H, W] in [0, 1] from the data sets' uint8 [N, H, W], or from floats [N, C, H, W] or [N, C*H*W]."""
    x = data.to_float(images) if images.dtype == torch.uint8 else images
    return x.reshape(len(x), *image_shape)


def draw_interpolation(trained, images, labels, path, n_pairs=8, steps=10, classes=None, seed=0):
    """The original's strips: each row a linear walk in code space between two test digits.

    images: as image_batch takes them (uint8 or floats in [0, 1]); labels: [N] for --classes."""
    images = image_batch(images, trained.config.image_shape)
    g = torch.Generator().manual_seed(seed)
    a, b = pick_pairs(labels, n_pairs, classes, g)
    device = next(trained.encoder.parameters()).device
    strips = interpolate(trained.encoder, trained.decoder, images[a].to(device), images[b].to(device), steps)
    # the real end images frame each strip so the walk can be judged against them
    framed = torch.cat([images[a].unsqueeze(1).to(device), strips, images[b].unsqueeze(1).to(device)], dim=1)
    save_grid(framed.flatten(0, 1), path, nrow=steps + 2)


@torch.no_grad()
def draw_samples(trained, path, n=100, seed=0):
    """A grid of images decoded from prior draws (fixed by `seed`)."""
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same picture whatever the models' device
    save_grid(trained.decoder(trained.sample_prior(n, generator=g)), path, nrow=int(math.sqrt(n)) or 1)


@torch.no_grad()
def draw_reconstructions(trained, images, path, n=50):
    """Test images (odd rows) above their reconstructions (even rows), 10 a row; images as image_batch takes them."""
    device = next(trained.encoder.parameters()).device
    x = image_batch(images[:n], trained.config.image_shape).to(device)
    recon = trained.decoder(trained.encoder(x))
    rows = [t for i in range(0, len(x), 10) for t in (x[i : i + 10], recon[i : i + 10])]
    save_grid(torch.cat(rows), path, nrow=10)


def _epoch_ticks(ax, epochs):
    """Whole epochs on the x axis (matplotlib would label 0.98, 1.00, 1.02 around a single epoch)."""
    from matplotlib.ticker import MaxNLocator

    if len(epochs) <= 12:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def draw_losses(rows, path):
    """Loss curves of every phase and the test reconstruction, from the training history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= 30 else None  # a line of one point is invisible without a marker
    fig, (ax_rec, ax_adv) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_rec.plot(epochs, [r["recon_loss"] for r in rows], label="train", marker=marker)
    ax_rec.plot(epochs, [r["test_recon_bce"] for r in rows], label="test", marker=marker)
    ax_rec.set(xlabel="epoch", ylabel="BCE, nats / image", title="reconstruction")
    ax_rec.legend()
    ax_adv.plot(epochs, [r["disc_loss"] for r in rows], label="discriminator", marker=marker)
    ax_adv.plot(epochs, [r["gen_loss"] for r in rows], label="generator (encoder)", marker=marker)
    ax_adv.plot(epochs, [r["disc_accuracy"] for r in rows], label="discriminator accuracy", linestyle="--",
                marker=marker)
    for ax in (ax_rec, ax_adv):
        _epoch_ticks(ax, epochs)
    ax_adv.axhline(math.log(2), color="grey", linewidth=0.5)
    ax_adv.set(xlabel="epoch", title="adversarial phases (grey: log 2)")
    ax_adv.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def project_2d(codes):
    """A 2-D view of codes [N, d]: the codes themselves when d == 2, else their two principal axes.

    Returns (basis [d, 2] or None, description). The axes come from an exact SVD of the centred
    codes (deterministic, unlike torch.pca_lowrank); points are projected without centring, so
    the prior's origin stays at (0, 0).
    """
    d = codes.shape[1]
    if d <= 2:
        return None, "the code itself" if d == 2 else "the 1-D code against zero"
    centred = codes.double() - codes.double().mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    share = (s[:2] ** 2).sum() / (s**2).sum()
    how = f"projected on the test codes' first two principal axes ({100 * share:.0f} % of their variance)"
    return vh[:2].T.float(), how


def draw_latent(codes, labels, path, prior=None, class_names=None):
    """Scatter of codes [N, d] coloured by label, prior draws faint grey behind; returns how it projected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codes = codes.detach().float().cpu()
    basis, how = project_2d(codes)

    def view(z):  # [M, d] -> [M, 2]
        z = z.detach().float().cpu()
        if basis is not None:
            return z @ basis
        return z if z.shape[1] == 2 else torch.cat([z, torch.zeros_like(z)], 1)

    xy = view(codes)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    if prior is not None:
        pz = view(prior)
        ax.scatter(pz[:, 0], pz[:, 1], s=2, c="0.75", alpha=0.5, linewidths=0, label="prior draws", zorder=0)
    cmap = plt.get_cmap("tab10")
    for i, label in enumerate(torch.unique(labels).tolist()):
        mine = labels.cpu() == label
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        ax.scatter(xy[mine, 0], xy[mine, 1], s=3, color=cmap(i % 10), alpha=0.7, linewidths=0, label=name, zorder=1)
    ax.set_aspect("equal", adjustable="datalim")
    axis = "code" if basis is None else "principal axis"
    ax.set(xlabel=f"{axis} 1", ylabel=f"{axis} 2", title=f"Test codes by label: {how}")
    ax.title.set_fontsize(10)
    ax.legend(title="label", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=4, frameon=False, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return how


def draw_eval_curves(rows, path):
    """The --eval_every figures of the training history against epoch, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("parzen_ll") is not None and not math.isnan(r["parzen_ll"])]
    epochs = [r["epoch"] for r in rows]
    panels = [("parzen_ll", "Parzen log-likelihood (nats)"), ("test_recon_bce", "test reconstruction BCE (nats)"),
              ("knn_accuracy", "5-NN accuracy of codes"), ("mmd", "MMD² codes vs prior")]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.2))
    for ax, (key, title) in zip(axes, panels):
        values = [r.get(key, math.nan) for r in rows]
        if key == "parzen_ll":
            ax.errorbar(epochs, values, yerr=[r.get("parzen_sem", 0) for r in rows], marker="o", capsize=3)
        else:
            ax.plot(epochs, values, marker="o")
        ax.set(xlabel="epoch", title=title)
        ax.title.set_fontsize(10)
        _epoch_ticks(ax, epochs)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
