"""Every picture: image grids, loss and metric curves, 2-D code scatters. Functions of tensors and paths.

    import plots
    plots.save_grid(images, "samples.png", nrow=10)       # images [N, C, H, W] in [0, 1]
    plots.draw_losses(history, "losses.png")               # the training history's rows

What to draw is each model's own choice (aae.py, conditional.py, categorical.py: `pictures`); these only draw it.
matplotlib is imported inside the functions that need it.
"""

import math
from pathlib import Path

import torch

LEGEND_MOST = 20  # past this many classes (EMNIST's 47) a legend of repeating colours says nothing


def save_grid(images, path, nrow=10):
    """Images [N, C, H, W] in [0, 1] as one PNG grid, no axes; returns the path."""
    from torchvision.utils import save_image

    save_image(images.detach().float().cpu().clamp(0, 1), str(path), nrow=nrow, padding=2, pad_value=1.0)
    return Path(path)


def reconstruction_grid(x, recon, path, per_row=10):
    """Images x (odd rows) above their reconstructions (even rows), per_row a row."""
    rows = [t for i in range(0, len(x), per_row) for t in (x[i : i + per_row], recon[i : i + per_row])]
    save_grid(torch.cat(rows), path, nrow=per_row)
    return Path(path)


def interpolation_grid(start, strips, end, path):
    """Row p: the image start[p], the strip strips[p] [steps, C, H, W] of decoded codes, then end[p]."""
    framed = torch.cat([start.unsqueeze(1), strips, end.unsqueeze(1)], dim=1)  # [P, steps + 2, C, H, W]
    save_grid(framed.flatten(0, 1), path, nrow=framed.shape[1])
    return Path(path)


def style_grid(sources, decoded, path):
    """Row i: source image i, then its style decoded with each class k (columns)."""
    rows = torch.cat([sources.unsqueeze(1), decoded], dim=1)  # [R, K + 1, 1, H, W]
    save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1])
    return Path(path)


def cluster_grid(heads, members, path, per_row=10):
    """Row k: cluster k's head (decoded with zero style), then up to per_row of its images (blank if fewer)."""
    rows = []
    for head, images in zip(heads, members):
        row = torch.ones(per_row + 1, *head.shape)  # white where a cluster has fewer images
        row[0] = head
        row[1 : 1 + len(images[:per_row])] = images[:per_row]
        rows.append(row)
    save_grid(torch.cat(rows), path, nrow=per_row + 1)
    return Path(path)


def scatter(codes, labels, path, title, background=None, heads=None):
    """2-D codes [N, 2] coloured by label, over grey prior draws [M, 2]; heads [K, 2] as black crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.4))
    if background is not None:
        ax.scatter(background[:, 0], background[:, 1], s=2, c="0.85", label="prior draws", rasterized=True)
    points = ax.scatter(codes[:, 0], codes[:, 1], s=3, c=labels, cmap="tab10", vmin=-0.5, vmax=9.5, rasterized=True)
    if heads is not None:
        ax.scatter(heads[:, 0], heads[:, 1], s=80, c="black", marker="x")
        title += "; crosses: cluster heads"
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    if background is not None:
        ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set(title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


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
    return Path(path)


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
        name = "no label" if label < 0 else class_names[label] if class_names and label < len(class_names) \
            else str(label)
        ax.scatter(xy[mine, 0], xy[mine, 1], s=3, color=cmap(i % 10), alpha=0.7, linewidths=0, label=name, zorder=1)
    ax.set_aspect("equal", adjustable="datalim")
    axis = "code" if basis is None else "principal axis"
    ax.set(xlabel=f"{axis} 1", ylabel=f"{axis} 2", title=f"Test codes by label:\n{how}")  # two lines: fits
    ax.title.set_fontsize(10)
    if len(torch.unique(labels)) <= LEGEND_MOST:
        ax.legend(title="label", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=4, frameon=False,
                  fontsize=9)
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
    return Path(path)
