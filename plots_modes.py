"""Pictures of the paper's other AAEs (modes.py): style grids (Fig. 7), cluster heads (§6, Fig. 6) and 2-D
codes coloured by label (Figs. 2-4, 9). Each function writes one PNG and returns its path.

    plots_modes.style_grid(sources, decoded, "styles.png")   # sources [R, 1, H, W], decoded [R, K, 1, H, W]
"""

from pathlib import Path

import torch

from utils import save_grid


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
        ax.scatter(heads[:, 0], heads[:, 1], s=80, c="black", marker="x", label="cluster heads")
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    if background is not None or heads is not None:
        ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set(title=title, aspect="equal")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
