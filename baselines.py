"""The obvious baselines a paper model's number is judged against: k-means, and the same network on the labels alone.

    import baselines
    baselines.kmeans_error(train_x, train_y, test_x, test_y, k=16, seed=0)        # clustering (§6): test error
    baselines.labels_alone_error(data, labels, ModelConfig(), seed=0)            # semi-supervised (§5): test error

A model of the paper lists the ones that apply to it (`Variant.baselines`); `main.py evaluate` prints
each beside the model's own number (`--baselines False` skips them). Everything is seeded, on the CPU
generators passed or made here, so a baseline is the same number on every run.
"""

import sys

import torch
import torch.nn.functional as F
from tqdm import tqdm

import metrics
from data import to_float
from models import mlp

KMEANS_RESTARTS = 3  # the best of 3 k-means++ starts, by inertia
KMEANS_ITERATIONS = 100  # Lloyd steps at most; they stop earlier when no assignment changes
# The labels-alone network: Adam 1e-3 for 300 epochs over the labelled images, at most this many steps
# (with every label of a 60,000-image split, 300 epochs would be 180,000 steps).
LABELS_ALONE_EPOCHS, LABELS_ALONE_MAX_STEPS, LABELS_ALONE_BATCH = 300, 3000, 100


def _squared_distances(x, centres):
    return torch.addmm((centres * centres).sum(1), x, centres.T, alpha=-2.0) + (x * x).sum(1, keepdim=True)


def kmeans(x, k, generator, restarts=KMEANS_RESTARTS, iterations=KMEANS_ITERATIONS):
    """Centres [k, D] of x [N, D] (float), k-means++ starts and Lloyd steps; the best of `restarts` by inertia."""
    x = x.flatten(1).float()
    best, best_inertia = None, float("inf")
    for _ in range(restarts):
        centres = x[torch.randint(len(x), (1,), generator=generator)]
        for _ in range(1, k):  # k-means++: each next centre drawn in proportion to its squared distance
            d2 = _squared_distances(x, centres).min(1).values.clamp_min(0)
            centres = torch.cat([centres, x[torch.multinomial(d2 + 1e-12, 1, generator=generator)]])
        assigned = None
        for _ in range(iterations):
            nearest = _squared_distances(x, centres).argmin(1)
            if assigned is not None and torch.equal(nearest, assigned):
                break
            assigned = nearest
            sums = torch.zeros_like(centres).index_add_(0, nearest, x)
            counts = torch.bincount(nearest, minlength=k).unsqueeze(1)
            centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)  # an empty cluster keeps its centre
        inertia = float(_squared_distances(x, centres).min(1).values.clamp_min(0).sum())
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best


def kmeans_error(train_x, train_y, test_x, test_y, k, seed=0):
    """Test error of k-means with k clusters on train_x: each cluster takes the majority label of its training
    members, each test point the label of its nearest centre (the paper's §6 protocol, as for the models)."""
    centres = kmeans(train_x, k, torch.Generator().manual_seed(seed))
    train_pred = _squared_distances(train_x.flatten(1).float(), centres).argmin(1)
    test_pred = _squared_distances(test_x.flatten(1).float(), centres).argmin(1)
    return 1 - metrics.cluster_accuracy(test_pred, test_y, train_pred, train_y)


def pixels(images):
    """The data sets' uint8 images as float rows in [0, 1]: [N, C*H*W]."""
    return to_float(images).flatten(1)


def labels_alone_error(data, labels, model_cfg, seed=0, lr=1e-3):
    """Test error of the models' encoder architecture, image -> hidden -> hidden -> class, trained by Adam on the
    labelled images alone (labels: [N] the label or -1, as a model holds them), on the CPU."""
    rows = (labels.cpu() >= 0).nonzero().flatten()
    x, y = pixels(data.train.images[rows]), labels.cpu()[rows]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # its weights and dropout from its own seed; the caller's stream stays
        torch.manual_seed(seed)
        net = mlp([model_cfg.image_size, model_cfg.hidden_dim, model_cfg.hidden_dim, model_cfg.n_classes],
                  model_cfg.dropout)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        batch = min(LABELS_ALONE_BATCH, len(x))
        steps_per_epoch = -(-len(x) // batch)
        steps = min(LABELS_ALONE_EPOCHS * steps_per_epoch, LABELS_ALONE_MAX_STEPS)
        order = torch.empty(0, dtype=torch.long)
        # on a terminal, a bar with the time left: a slow CPU takes a minute or more
        for _ in tqdm(range(steps), desc="baseline: the network on the labels alone", unit="step", leave=False,
                      disable=not sys.stderr.isatty()):
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(len(x), generator=g)])
            pick, order = order[:batch], order[batch:]
            loss = F.cross_entropy(net(x[pick]), y[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        predicted = torch.cat([net(pixels(chunk)).argmax(1) for chunk in data.test.images.split(1000)])
    return float((predicted != data.test.labels.cpu()).double().mean())
