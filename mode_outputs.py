"""What a trained model of any mode leaves behind (modes.py, issue 4): its numbers in mode_metrics.json
and its pictures — style grids (Fig. 7), cluster heads (§6), 2-D codes coloured by label (Figs. 2-4, §7).

    import mode_outputs
    numbers, pictures = mode_outputs.write_outputs(trainer, data, "weights")   # after trainer.fit(data)

`main.py draw` and `main.py evaluate` reach a mode's checkpoint through `draw` and `write_report`
(trainer = modes.load_trainer("weights")); `--eval_every` through `mode_metrics`.
"""

import json
from pathlib import Path

import torch

import metrics
import modes
import priors
from modes import CATEGORICAL, codes_of, evaluating, predict_category, representation
from train import as_float
from utils import atomic_write, draw_losses, save_grid

METRICS_NAME = "mode_metrics.json"
# The pictures `main.py draw` makes of a mode's checkpoint: "mode" is the mode's own (draw_mode).
PICTURES = ("all", "mode", "samples", "reconstructions", "losses")
# What each number means, for report.md.
MEANINGS = {
    "test_recon_bce": "reconstruction BCE, nats per test image (supervised: decoded with the image's label)",
    "test_error": "test classification error of argmax q(y|x) (§5, Table 2)",
    "test_cluster_error": "test error when each cluster takes the majority label of its training images (§6, Table 3)",
    "clusters_used": "categories that at least one test image falls into",
    "style_knn_accuracy": "label of a test image found by 5-NN among the training images' style codes z; "
                          "1 / classes means the style holds no class",
    "category_effect": "mean absolute pixel change of a decoded test image when its category y is swapped for "
                       "another, its style kept; 0 means the decoder ignores y",
    "knn_accuracy": "label of a test image found by 5-NN among the training codes (supervised: 1 / classes "
                    "means the code holds style only)",
    "knn_accuracy_2d": "5-NN accuracy on the 2-D representation W y + z (§7)",
    "mmd_to_prior": "MMD² between test codes and prior draws; 0 when they match",
    "label_part_accuracy": "test codes that lie in their label's part of the prior (§2.3)",
}
# The paper's figures on full MNIST (Makhzani et al. 2016), by (mode, labelled examples or categories).
PAPER = {("semi_supervised", 100): "1.90 ± 0.10 % (Table 2, 100 labels)",
         ("semi_supervised", 1000): "1.60 ± 0.08 % (Table 2, 1000 labels)",
         ("semi_supervised", 60000): "0.85 ± 0.02 % (Table 2, all labels)",
         ("clustering", 16): "9.55 ± 2.05 % (Table 3, 16 clusters)",
         ("clustering", 30): "4.10 ± 1.13 % (Table 3, 30 clusters)"}


def wanted(model_cfg, train_cfg):
    """Whether a run has outputs here: all but the plain AAE (Gaussian prior, deterministic encoder),
    whose numbers and pictures are evaluate.py's and utils.py's."""
    return (model_cfg.mode != "unsupervised" or model_cfg.label_discriminator or model_cfg.encoder != "deterministic"
            or train_cfg.prior != "gaussian")


def mode_metrics(trainer, data):
    """This model's numbers on `data` (its test split; the training split where a number says so)."""
    m = trainer.model_cfg
    train, test = data.train, data.test
    test_images = test.images.to(trainer.device)
    if m.mode == "supervised":  # the decoder reads each image's label too
        bce = modes.labelled_reconstruction(trainer.encoder, trainer.decoder, test_images, test.labels, m.n_classes)
    else:
        bce = trainer.test_reconstruction(test_images)
    out = {"test_recon_bce": bce}
    if m.mode in CATEGORICAL:
        test_pred = predict_category(trainer.encoder, test.images)
        if trainer.reads_labels:  # §5, Table 2
            out["test_error"] = modes.classification_error(test_pred, test.labels)
        else:  # §6, Table 3: each cluster takes the majority label of its training members
            train_pred = predict_category(trainer.encoder, train.images)
            out["test_cluster_error"] = 1 - metrics.cluster_accuracy(test_pred, test.labels, train_pred, train.labels)
            out["clusters_used"] = int(test_pred.unique().numel())
        # does the style code still say the class? near 1 / n_classes means no (§5)
        out["style_knn_accuracy"] = metrics.knn_accuracy(codes_of(trainer.encoder, train.images), train.labels,
                                                         codes_of(trainer.encoder, test.images), test.labels)
        out["category_effect"] = modes.category_effect(trainer.encoder, trainer.decoder, test.images,
                                                       seed=trainer.cfg.seed)
        if m.mode == "dim_reduction":
            out["knn_accuracy_2d"] = metrics.knn_accuracy(representation(trainer, train.images), train.labels,
                                                          representation(trainer, test.images), test.labels)
        return out
    train_z, test_z = codes_of(trainer.encoder, train.images), codes_of(trainer.encoder, test.images)
    # supervised: near chance (1 / n_classes) means the code keeps style, not class (§4)
    out["knn_accuracy"] = metrics.knn_accuracy(train_z, train.labels, test_z, test.labels)
    if m.mode == "unsupervised":
        g = torch.Generator(device=trainer.prior_rng.device).manual_seed(trainer.cfg.seed)
        out["mmd_to_prior"] = metrics.mmd(test_z, trainer.sample_prior(len(test_z), generator=g))
    if m.label_discriminator:  # §2.3: is each test code in its label's part of the prior?
        index = torch.arange(10000) % m.n_classes
        draws = priors.sample(trainer.cfg.prior, len(index), 2, generator=torch.Generator().manual_seed(0),
                              index=index, n_components=m.n_classes)
        out["label_part_accuracy"] = metrics.knn_accuracy(draws, index, test_z.cpu(), test.labels)
    return out


# -- pictures and the metrics file -----------------------------------------------------------------


def draw_mode(trainer, data, folder):
    """This mode's picture(s) into `folder`; returns their paths."""
    m, folder = trainer.model_cfg, Path(folder)
    test, enc, dec = data.test, trainer.encoder, trainer.decoder
    device = trainer.device
    written = []
    if m.mode in ("supervised", "semi_supervised"):  # Fig. 7: rows are styles, columns are classes
        first = torch.stack([(test.labels == c).nonzero().flatten()[0] for c in range(m.n_classes)
                             if (test.labels == c).any()])
        sources = as_float(test.images[first].to(device))
        k = m.n_classes
        with evaluating(enc, dec):
            z = enc(sources) if m.mode == "supervised" else enc.style(sources)  # [R, latent]
            y = torch.eye(k, device=device).repeat(len(z), 1)  # [R * k, k]: every class for each style
            decoded = dec(torch.cat([y, z.repeat_interleave(k, 0)], 1)).view(len(z), k, *sources.shape[1:])
        written.append(style_grid(sources, decoded, folder / f"{m.mode}_styles.png"))
    if m.mode == "clustering" or (m.mode == "dim_reduction" and not trainer.reads_labels):
        k = trainer.n_categories  # §6: heads decoded with zero style, then test images of each cluster
        with evaluating(dec):
            heads = dec(torch.cat([torch.eye(k, device=device), torch.zeros(k, m.latent_dim, device=device)], 1))
        pred = predict_category(enc, test.images).cpu()
        members = [as_float(test.images[pred == c][:10]) for c in range(k)]
        written.append(cluster_grid(heads.cpu(), members, folder / f"{m.mode}_clusters.png"))
    if m.mode == "dim_reduction":  # §7
        heads = (dec.head_scale * dec.heads).detach().cpu()
        written.append(scatter(representation(trainer, test.images).cpu(), test.labels,
                                           folder / "dim_reduction_codes.png", "2-D representation W y + z (test)",
                                           heads=heads))
    if m.mode == "unsupervised" and m.latent_dim == 2:  # Figs. 2-4
        g = torch.Generator(device=trainer.prior_rng.device).manual_seed(trainer.cfg.seed)
        prior = trainer.sample_prior(5000, generator=g).cpu()
        title = f"test codes, {trainer.cfg.prior} prior" + (", label discriminator" if m.label_discriminator else "")
        written.append(scatter(codes_of(enc, test.images).cpu(), test.labels,
                                           folder / "latent_codes.png", title, background=prior))
    return written


def settings(trainer, data):
    """What was trained: mode, encoder, prior, sizes, labelled examples, epochs."""
    m, t = trainer.model_cfg, trainer.cfg
    labelled = 0  # from the configs, so that a reloaded trainer (which holds no labels) says the same
    if modes.reads_labels(m, t):
        labelled = len(data.train.images) if t.labels == -1 else t.labels
    out = {"dataset": data.name, "mode": m.mode, "encoder": m.encoder, "prior": t.prior,
           "label_discriminator": m.label_discriminator, "latent_dim": m.latent_dim,
           "labelled_examples": labelled, "epochs": trainer.epoch}
    if m.mode in CATEGORICAL:
        out["categories"] = trainer.n_categories
    return out


def write_outputs(trainer, data, folder):
    """mode_metrics.json (what was trained, and its numbers) and the mode's pictures, into `folder`."""
    numbers = {**settings(trainer, data), **mode_metrics(trainer, data)}
    pictures = draw_mode(trainer, data, folder)
    numbers["pictures"] = [p.name for p in pictures]
    text = json.dumps(numbers, indent=1) + "\n"
    atomic_write(Path(folder) / METRICS_NAME, lambda f: f.write(text.encode()))
    return numbers, pictures


def draw(trainer, data, folder, what=("all",), seed=0):
    """The pictures `what` (names from PICTURES) of a mode's trainer into `folder`; returns their paths."""
    folder, wanted, written = Path(folder), set(what), []
    folder.mkdir(parents=True, exist_ok=True)
    if wanted & {"all", "mode"}:
        written += draw_mode(trainer, data, folder)
    if wanted & {"all", "samples"}:
        written.append(draw_samples(trainer, folder / "samples.png", seed=seed))
    if wanted & {"all", "reconstructions"}:
        written.append(draw_reconstructions(trainer, data, folder / "reconstructions.png"))
    if wanted & {"all", "losses"} and trainer.history:
        draw_losses(trainer.history, folder / "losses.png")
        written.append(folder / "losses.png")
    return written


def draw_samples(trainer, path, rows=10, seed=0):
    """Prior draws decoded. A mode with a category (or label) draws column k with category k."""
    columns = trainer.n_categories if trainer.model_cfg.mode != "unsupervised" else 10
    g = torch.Generator(device=trainer.prior_rng.device).manual_seed(seed)
    code = trainer.sample_prior(rows * columns, generator=g)  # category i mod columns, for the modes
    with evaluating(trainer.decoder):
        save_grid(trainer.decoder(code), path, nrow=columns)
    return Path(path)


def draw_reconstructions(trainer, data, path, n=50):
    """Test images (odd rows) above their reconstructions (even rows), 10 a row; supervised decodes
    each with its label."""
    enc, dec = trainer.encoder, trainer.decoder
    x = as_float(data.test.images[:n].to(trainer.device))
    with evaluating(enc, dec):
        code = enc(x)
        if trainer.model_cfg.mode == "supervised":
            labels = data.test.labels[:n].to(trainer.device)
            code = torch.cat([torch.nn.functional.one_hot(labels, trainer.model_cfg.n_classes).float(), code], 1)
        recon = dec(code)
    rows = [t for i in range(0, len(x), 10) for t in (x[i : i + 10], recon[i : i + 10])]
    save_grid(torch.cat(rows), path, nrow=10)
    return Path(path)


def paper_figure(numbers):
    """The paper's figure for this experiment, where it gives one (on full MNIST)."""
    key = numbers["categories"] if numbers["mode"] == "clustering" else numbers["labelled_examples"]
    return PAPER.get((numbers["mode"], key))


def write_report(trainer, data, out, checkpoint=None, seed=0):
    """`main.py evaluate` of a mode's checkpoint: metrics.json, report.md and its pictures in `out`;
    returns the numbers and the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    numbers = {"checkpoint": str(checkpoint) if checkpoint else None, **settings(trainer, data),
               **mode_metrics(trainer, data)}
    pictures = draw(trainer, data, out, seed=seed)
    text = json.dumps(numbers, indent=2) + "\n"
    atomic_write(out / "metrics.json", lambda f: f.write(text.encode()))
    report = _markdown(numbers, pictures)
    atomic_write(out / "report.md", lambda f: f.write(report.encode()))
    return numbers, [out / "metrics.json", out / "report.md", *pictures]


def _markdown(numbers, pictures):
    n = numbers
    what = f"--mode {n['mode']}" + (" --label_discriminator" if n["label_discriminator"] else "")
    lines = [f"# Evaluation of `{n['checkpoint']}`" if n["checkpoint"] else "# Evaluation", "",
             f"{what}, {n['dataset']}, {n['epochs']} epochs, {n['prior']} prior, {n['latent_dim']}-D code, "
             f"{n['labelled_examples']:,} labelled training examples. Written by `python main.py evaluate`.", "",
             "| number | value | what it is |", "|---|---|---|"]
    for key, meaning in MEANINGS.items():
        if key in n:
            value = n[key]
            shown = f"{value}" if isinstance(value, int) else (f"{value:.2f}" if key == "test_recon_bce"
                                                                else f"{100 * value:.1f} %" if key != "mmd_to_prior"
                                                                else f"{value:.4f}")
            lines.append(f"| {key} | {shown} | {meaning} |")
    paper = paper_figure(n)
    if paper:
        lines += ["", f"The paper's figure on full MNIST (60,000 / 10,000 images, far longer training): {paper}."]
    for path in pictures:
        lines += ["", f"![{path.stem}]({path.name})"]
    return "\n".join(lines) + "\n"


# -- picture primitives -------------------------------------------------------------------------


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
