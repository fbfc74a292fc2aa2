"""Measuring what a trained model learned: the paper's metrics on the test split, and a report.

    python main.py evaluate --weights weights     # metrics.json, report.md and its PNGs beside aae.pt

    import data, evaluate, utils
    model = utils.load_models("weights")
    dataset = data.load_dataset("mnist", "data")
    results = evaluate.evaluate_checkpoint(model, dataset)             # a JSON-ready dict
    evaluate.write_report(model, dataset, "weights", results)

This file owns the protocol of the paper's Table 1 — which split, how many samples, which held-out
images, which bandwidths (docs/metrics.md states each); the estimators are metrics.py's pure
functions. A model runs it where its `likelihood_protocol` says so, and adds its own `numbers`.
`evaluate_trainer` is the cheaper evaluation that `main.py --eval_every N` runs during training.
All random draws come from generators seeded by EvalConfig.seed on the CPU, so an evaluation
gives the same numbers every time and never moves a training run's random streams.
"""

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

import metrics
import plots
import priors
import utils
from data import to_float


@dataclass
class EvalConfig:
    # Table 1 protocol of Makhzani et al. 2016 (from Goodfellow et al. 2014): 10,000 decoded prior
    # draws, sigma chosen on 1,000 held-out images from metrics.DEFAULT_SIGMAS = logspace(-1, 0, 10).
    parzen_samples: int = 10000
    # The last 1,000 images of the training split choose sigma: deterministic, and disjoint from the
    # test split. (Our models train on all 60,000, so these images were seen in training.)
    parzen_validation: int = 1000
    knn_k: int = 5
    # Codes per set for the MMD, which costs O(n^2): 2,000 keeps it ~1 s on 2 cores.
    mmd_points: int = 2000
    seed: int = 0  # the prior draws of the Parzen window, of the MMD and of the latent picture
    batch_size: int = 1000


# During training (--eval_every): 1,000 Parzen samples instead of 10,000 make the Parzen part ~5x cheaper.
# Fewer kernels give a lower (more pessimistic) log-likelihood, so these figures are comparable with
# each other across epochs, not with the full protocol's.
TRAINING_EVAL = EvalConfig(parzen_samples=1000)

# The figures that go into each evaluated epoch's history row and log.csv.
TRAINING_COLUMNS = ("parzen_ll", "parzen_sem", "recon_mse", "knn_accuracy", "mmd", "code_mean_error",
                    "code_std_error")

PAPER_PARZEN_MNIST = "340 ± 2"  # nats: the AAE of Makhzani et al. 2016, Table 1 (MNIST)
CLASS_NAMES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                      "Bag", "Ankle boot"),
}


def prior_bandwidths(z):
    """MMD kernel bandwidths from prior draws alone: (1/4 .. 4) x their median pairwise distance.

    Fixed by the prior, not by the codes, so MMD figures of checkpoints with the same prior compare.
    """
    z = z[:1000].double()
    d = torch.cdist(z, z)
    median = float(d[torch.triu_indices(len(z), len(z), offset=1).unbind()].median()) or 1.0
    return [median * m for m in (0.25, 0.5, 1.0, 2.0, 4.0)]


@torch.no_grad()
def evaluate_checkpoint(model, dataset, config=None):
    """Every metric of docs/metrics.md for `model` (as utils.load_models gives it, in eval mode) on `dataset`.

    Returns a JSON-ready dict: scalars (parzen_ll, parzen_sem, parzen_sigma, recon_bce, recon_mse,
    knn_accuracy, mmd, code_mean_error, code_std_error), per-dimension lists (code_mean, code_std,
    prior_mean, prior_std), the Parzen validation score of each sigma, the protocol and seconds per part.
    """
    c = config or EvalConfig()
    device = model.device
    gen = torch.Generator().manual_seed(c.seed)  # on the CPU: the same draws whatever the device
    train, test = dataset.train, dataset.test
    n_valid = min(c.parzen_validation, len(train.images))
    seconds = {}
    started = time.perf_counter()

    # on a terminal, a bar with the time left. The weights are rough shares of the time, measured by `main.py
    # evaluate` of a 1-epoch Fashion-MNIST model (60,000 / 10,000 images) on the 2-core development machine: parzen,
    # reconstruction, knn, prior_match took 65, 4, 28, 3 % with --threads 1 and 52, 10, 34, 4 % with --threads 2;
    # knn's share shrinks with the data (mnist-sample: 5 %)
    weights = {"parzen": 50, "reconstruction": 5, "knn": 40, "prior_match": 5}
    bar = tqdm(total=sum(weights.values()), desc="evaluate: parzen", bar_format="{desc} {bar} {remaining} left",
               leave=False, disable=not sys.stderr.isatty())
    parts = iter(weights)
    next(parts)

    def lap(name):
        nonlocal started
        now = time.perf_counter()
        seconds[name] = round(now - started, 3)
        started = now
        bar.update(weights[name])
        bar.set_description(f"evaluate: {next(parts, 'done')}")

    test_images = to_float(test.images).to(device)
    samples = model.decode(model.sample_prior(c.parzen_samples, generator=gen)).flatten(1)
    parzen = metrics.parzen_estimate(samples, to_float(train.images[-n_valid:]).to(device), test_images,
                                     batch_size=c.batch_size)
    del samples
    lap("parzen")

    recon = metrics.reconstruction_errors(model.encoder, model.decoder, test_images, c.batch_size)
    lap("reconstruction")

    test_codes = model.encode(test.images)
    train_codes = model.encode(train.images)
    knn = None  # a flat folder's images have no labels to vote with
    if dataset.labelled:
        knn = metrics.knn_accuracy(train_codes, train.labels.to(device), test_codes, test.labels, k=c.knn_k,
                                   batch_size=c.batch_size)
    del train_codes
    lap("knn")

    # its own stream: the same draws (hence bandwidths) whatever parzen_samples is
    z = model.sample_prior(c.mmd_points, generator=torch.Generator().manual_seed(c.seed + 1))
    bandwidths = prior_bandwidths(z)
    mmd = metrics.mmd(test_codes, z, bandwidths=bandwidths, max_points=c.mmd_points, seed=c.seed)
    name, params = model.train_cfg.prior, model.prior_params
    described = priors.describe(name, model.model_cfg.latent_dim, **params)
    moments = metrics.moment_match(test_codes, described["mean"], described["std"])
    lap("prior_match")
    bar.close()

    return {
        "parzen_ll": parzen["mean"], "parzen_sem": parzen["sem"], "parzen_sigma": parzen["sigma"],
        "parzen_validation_ll": {f"{s:.4g}": ll for s, ll in parzen["scores"].items()},
        "recon_bce": recon["bce"], "recon_mse": recon["mse"],
        "knn_accuracy": knn,
        "mmd": mmd,
        "code_mean_error": moments["mean_abs_error"], "code_std_error": moments["std_abs_error"],
        "code_mean": moments["code_mean"], "code_std": moments["code_std"],
        "prior_mean": moments["prior_mean"], "prior_std": moments["prior_std"],
        "protocol": {
            **asdict(c), "parzen_validation": n_valid, "parzen_validation_images": "the last of the training split",
            "parzen_sigmas": metrics.DEFAULT_SIGMAS.tolist(), "test_images": len(test.images),
            "train_images": len(train.images), "pixels": test_images[0].numel(), "mmd_bandwidths": bandwidths,
            "prior": name, **params,
        },
        "seconds": seconds,
    }


def evaluate_trainer(trainer, dataset, config=TRAINING_EVAL):
    """The TRAINING_COLUMNS of a Trainer's current networks, evaluated in eval mode; for fit(evaluate=)."""
    model = trainer.model
    try:
        results = evaluate_checkpoint(model.eval(), dataset, config)
    finally:
        model.train()
    return {key: results[key] for key in TRAINING_COLUMNS}


# -- the report -----------------------------------------------------------------------------------


def summary(results):
    """The headline figures in a few lines, for the terminal."""
    r, p = results, results["protocol"]
    return "\n".join([
        f"Parzen log-likelihood  {r['parzen_ll']:.1f} ± {r['parzen_sem']:.1f} nats (sigma {r['parzen_sigma']:.3g}, "
        f"{p['parzen_samples']} samples; the paper's AAE: {PAPER_PARZEN_MNIST} on MNIST)",
        f"reconstruction         BCE {r['recon_bce']:.2f} nats/image, MSE {r['recon_mse']:.4f} per pixel",
        f"k-NN accuracy (k={p['knn_k']})    "
        + ("skipped: no labels" if r["knn_accuracy"] is None else f"{r['knn_accuracy']:.4f}"),
        f"prior match            MMD² {r['mmd']:.4f}; mean |code mean - prior mean| {r['code_mean_error']:.3f}, "
        f"|code std - prior std| {r['code_std_error']:.3f}",
    ])


# The numbers measured against the test images' labels: none of them for a flat folder, which has no labels.
LABEL_FIGURES = ("test_error", "test_cluster_error", "test_cluster_error_exemplar", "style_knn_accuracy",
                 "knn_accuracy", "knn_accuracy_2d", "label_part_accuracy", "kmeans_pixels_error", "kmeans_codes_error",
                 "labels_alone_error")

# What each number means, for report.md.
MEANINGS = {
    "test_recon_bce": "reconstruction BCE, nats per test image (supervised: decoded with the image's label)",
    "test_error": "test classification error of argmax q(y|x) (§5, Table 2)",
    "test_cluster_error": "test error when each cluster takes the majority label of its training images (§6, Table 3)",
    "test_cluster_error_exemplar": "test error when each cluster takes the label of the one training image surest of "
                                   "it, argmax q(y = k|x): the paper's labelling (§6, there on a validation set)",
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
    "kmeans_pixels_error": "baseline of test_cluster_error: k-means with as many clusters on the raw pixels "
                           "(k-means++, best of 3 starts), its clusters labelled the same way",
    "kmeans_codes_error": "baseline of test_cluster_error: the same k-means on the codes of the plain AAE given by "
                          "--codes_of",
    "labels_alone_error": "baseline of test_error: the same encoder network trained on the same labelled images "
                          "alone (Adam 1e-3, 300 epochs over them, at most 3,000 steps)",
}


# What each picture shows, for report.md: file name -> (section title, caption).
CAPTIONS = {
    "reconstructions.png": ("Reconstructions", "Rows 1, 3, 5, …: the first 50 test images; the row below each: its "
                            "reconstruction decoder(encoder(x))."),
    "samples.png": ("Samples from the prior", "Codes drawn from the prior (fixed noise), decoded; a model with "
                    "classes or categories draws category k in column k."),
    "interpolation.png": ("Interpolations", "Each row: a test image, 10 decoded points on the straight line between "
                          "its code and another's, then the other test image."),
    "losses.png": ("Training curves", "Per-epoch losses from the training log."),
    "eval_curves.png": ("Metrics during training", "The cheaper evaluation of --eval_every "
                        f"({TRAINING_EVAL.parzen_samples:,} Parzen samples): compare epochs with each other, not with "
                        "the table above."),
}


def fitting_pictures(model, test, what):
    """(what, options) for model.pictures: the interpolation's 8 pairs cut to what a small test split (a folder's)
    holds, and no interpolation of a split of one image."""
    pairs = min(8, len(test.images) // 2)
    if not pairs:
        wanted = model.picture_choices() if "all" in what else what
        return tuple(w for w in wanted if w != "interpolation"), {}
    return tuple(what), ({"n_pairs": pairs} if "pairs" in model.draw_flags else {})


def write_report(model, dataset, out, results=None, numbers=None, seed=0, checkpoint=None):
    """metrics.json, report.md and the PNGs it shows, in folder `out`; returns the paths written.

    results: evaluate_checkpoint's (the paper's Table 1 protocol), or None; numbers: the model's own.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    what, options = fitting_pictures(model, dataset.test, ("all",))
    pictures = model.pictures(dataset, out, what, seed=seed, **options)
    captions = dict(CAPTIONS)
    if results is not None:
        codes = model.encode(dataset.test.images).cpu()
        prior = model.sample_prior(len(codes), generator=torch.Generator().manual_seed(seed)).cpu()
        how = plots.draw_latent(codes, dataset.test.labels, out / "latent.png", prior=prior,
                                class_names=dataset.classes or CLASS_NAMES.get(dataset.name))
        coloured = "coloured by label" if dataset.labelled else "(no labels to colour them by)"
        captions["latent.png"] = ("Latent space", f"The {len(codes):,} test codes {coloured}, over as many "
                                  f"prior draws in grey; {how}.")
        pictures.append(out / "latent.png")
        if any(_present(row.get("parzen_ll")) for row in model.history):
            pictures.append(plots.draw_eval_curves(model.history, out / "eval_curves.png"))

    meta = {"checkpoint": str(checkpoint) if checkpoint else None, **model.settings(dataset)}
    utils.write_json({**meta, **(results or {}), **(numbers or {})}, out / "metrics.json")
    report = _markdown(meta, results, numbers, model.paper_figure(meta), pictures, captions)
    utils.atomic_write(out / "report.md", lambda f: f.write(report.encode()))
    return [out / "metrics.json", out / "report.md", *pictures]


def _present(value):
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _markdown(meta, results, numbers, paper, pictures, captions):
    m = meta
    lines = [f"# Evaluation of `{m['checkpoint']}`" if m["checkpoint"] else "# Evaluation", "",
             f"{m['model'][0].upper()}{m['model'][1:]}, {m['dataset']}, "
             f"{m['epochs']} epoch{'s' if m['epochs'] != 1 else ''} of training, "
             f"{m['prior']} prior, {m['latent_dim']}-D code, {m['labelled_examples']:,} labelled training examples. "
             "All figures on the test split; the protocols are spelled out in docs/metrics.md. Written by "
             "`python main.py evaluate`."]
    if results is not None:
        lines += ["", *_protocol_lines(results)]
    if numbers:
        lines += ["", "| number | value | what it is |", "|---|---|---|"]
        for key, meaning in MEANINGS.items():
            if key in numbers:
                lines.append(f"| {key} | {_shown(key, numbers[key])} | {meaning} |")
        if paper:
            lines += ["", f"The paper's figure on full MNIST (60,000 / 10,000 images, far longer training): {paper}."]
    for path in pictures:
        title, caption = captions.get(path.name, (path.stem.replace("_", " ").capitalize(), ""))
        lines += ["", f"## {title}", "", f"![{title}]({path.name})"] + (["", caption] if caption else [])
    seconds = (results or {}).get("seconds", {})
    if seconds:
        lines += ["", "Evaluation time: " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) + "."]
    return "\n".join(lines) + "\n"


def _shown(key, value):
    if isinstance(value, int):
        return f"{value}"
    if key == "test_recon_bce":
        return f"{value:.2f}"
    return f"{value:.4f}" if key == "mmd_to_prior" else f"{100 * value:.1f} %"


def _protocol_lines(r):
    p = r["protocol"]
    prior = f"{p['prior']} prior" + (f" (std {p['std']:g})" if "std" in p else "")
    rows = [
        ("Parzen log-likelihood", f"**{r['parzen_ll']:.1f} ± {r['parzen_sem']:.1f}** nats",
         f"{p['parzen_samples']:,} prior draws decoded; isotropic Gaussian window, sigma = {r['parzen_sigma']:.3g} "
         f"chosen from logspace(-1, 0, 10) on the last {p['parzen_validation']:,} training images; "
         f"mean ± standard error over the {p['test_images']:,} test images"),
        ("Reconstruction BCE", f"{r['recon_bce']:.2f} nats / image", "binary cross-entropy summed over the "
         f"{p.get('pixels', 784):,} pixel values, mean over test images"),
        ("Reconstruction MSE", f"{r['recon_mse']:.5f}", "squared error per pixel (pixels in [0, 1]), mean over test "
         "images"),
        (f"k-NN accuracy (k = {p['knn_k']})",
         "skipped: the images have no labels" if r["knn_accuracy"] is None else f"{100 * r['knn_accuracy']:.2f} %",
         f"label of each test code by majority vote of its {p['knn_k']} nearest of the {p['train_images']:,} "
         "training codes (euclidean)"),
        ("MMD² (codes, prior)", f"{r['mmd']:.5f}", f"unbiased, {p['mmd_points']:,} test codes against "
         f"{p['mmd_points']:,} prior draws; Gaussian kernels of bandwidths "
         + ", ".join(f"{h:.3g}" for h in p["mmd_bandwidths"]) + " (fixed by the prior); 0 when they match"),
        ("Code mean error", f"{r['code_mean_error']:.4f}",
         "mean over dimensions of \\|mean of test codes − prior mean\\|"),
        ("Code std error", f"{r['code_std_error']:.4f}",
         "mean over dimensions of \\|std of test codes − prior std\\|"),
    ]
    lines = [
        f"The paper's Table 1 protocol, {prior}:",
        "",
        "| metric | value | how |",
        "|---|---|---|",
        *(f"| {name} | {value} | {how} |" for name, value, how in rows),
        "",
        f"For comparison, the paper's AAE reaches **{PAPER_PARZEN_MNIST} nats on MNIST** with this protocol "
        "(Makhzani et al. 2016, Table 1); it gives no figure for Fashion-MNIST. Parzen-window estimates are a "
        "poor judge of both likelihood and sample quality (Theis et al. 2016, \"A note on the evaluation of "
        f"generative models\"): in {p.get('pixels', 784):,} dimensions 10,000 samples are far too few, and the "
        "figure can rank a model that merely memorises training images above a good one. Read it as a rough, "
        "comparable number only.",
        "",
        "Per dimension of the code (test codes against the prior):",
        "",
        "| dim | code mean | prior mean | code std | prior std |",
        "|---|---|---|---|---|",
        *(f"| {d} | {cm:.3f} | {pm:.3f} | {cs:.3f} | {ps:.3f} |"
          for d, (cm, pm, cs, ps) in enumerate(zip(r["code_mean"], r["prior_mean"], r["code_std"], r["prior_std"]))),
    ]
    return lines
