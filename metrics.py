"""Evaluation of an adversarial autoencoder: pure functions on tensors.

Owns the numbers reported for a checkpoint — Parzen-window log-likelihood (the protocol of
Goodfellow et al. 2014 used in Makhzani et al. 2016, Sec. 3 / Table 1), reconstruction error,
k-NN accuracy of latent codes, MMD and moment match between codes and the prior, and
cluster accuracy. Models are passed in as callables, so this file imports no project file.
Nothing here draws random numbers except through a fixed-seed `torch.Generator`.

    import metrics
    best = metrics.parzen_estimate(decoded_prior_samples, valid_images, test_images)
    print(f"{best['mean']:.1f} ± {best['sem']:.1f} nats (sigma={best['sigma']:.3f})")

Benchmark (2 CPU cores): `python metrics.py` prints the wall time of each function at full size.
"""
import math
import time

import torch
import torch.nn.functional as F

# Grid of Goodfellow et al.'s parzen_ll.py (numpy.logspace(-1, 0, 10)), also used by the AAE paper.
DEFAULT_SIGMAS = torch.logspace(-1, 0, 10, dtype=torch.float64)


def _flatten(x):
    """[N, ...] -> [N, D]."""
    return x.reshape(x.shape[0], -1)


def _squared_distances(a, b, b_sq=None):
    """Pairwise squared euclidean distances [len(a), len(b)], via ||a||^2 + ||b||^2 - 2 a.b (one matmul)."""
    a_sq = (a * a).sum(1, keepdim=True)  # [A, 1]
    if b_sq is None:
        b_sq = (b * b).sum(1)  # [B]
    d2 = torch.addmm(a_sq + b_sq, a, b.T, alpha=-2.0)  # a_sq + b_sq - 2 a b^T
    return d2.clamp_(min=0.0)


@torch.no_grad()
def _parzen_log_likelihoods(samples, data, sigmas, batch_size, sample_chunk, dtype):
    """Log-likelihood of every row of `data` under the Parzen window on `samples`, for each sigma.

    Returns float64 [len(sigmas), N]. The distance matrix of each (data batch, sample chunk)
    pair is computed once and reused for every sigma; the logsumexp over sample chunks is
    combined with logaddexp, so memory stays O(batch_size * sample_chunk).
    """
    samples, data = _flatten(samples), _flatten(data)
    assert samples.shape[1] == data.shape[1], f"dimension mismatch {samples.shape} vs {data.shape}"
    n_samples, dim = samples.shape
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    assert (sigmas > 0).all(), "sigmas must be positive"
    device = data.device
    # Centring on the sample mean shrinks the norms, hence the cancellation error of the matmul trick.
    samples = samples.to(device=device, dtype=dtype)
    centre = samples.mean(0)
    samples = samples - centre
    chunks = [(s, (s * s).sum(1)) for s in samples.split(sample_chunk)]
    neg_inv_two_var = (-0.5 / sigmas**2).tolist()
    # log of the normaliser: S kernels, each a D-dimensional isotropic Gaussian
    log_norm = -math.log(n_samples) - 0.5 * dim * torch.log(2 * math.pi * sigmas**2)  # [n_sigma]

    out = torch.empty(len(sigmas), data.shape[0], dtype=torch.float64, device=device)
    for start in range(0, data.shape[0], batch_size):
        x = data[start:start + batch_size].to(dtype) - centre
        acc = torch.full((len(sigmas), x.shape[0]), -math.inf, dtype=torch.float64, device=device)
        for s, s_sq in chunks:
            d2 = _squared_distances(x, s, s_sq).double()  # [B, chunk]
            for j, c in enumerate(neg_inv_two_var):
                acc[j] = torch.logaddexp(acc[j], torch.logsumexp(d2 * c, dim=1))
        out[:, start:start + x.shape[0]] = acc
    return out + log_norm.to(device)[:, None]


def parzen_log_likelihood(samples, data, sigma, *, batch_size=1000, sample_chunk=10000,
                          dtype=torch.float64):
    """Per-example log p(x) in nats under an isotropic Gaussian Parzen window on `samples`.

    samples [S, D] (or [S, 1, 28, 28]), data [N, D], pixels in [0, 1]:
        log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log S - D/2 log(2 pi sigma^2).
    Distances use one matmul per (batch, chunk) in `dtype`; the logsumexp is always float64.
    float64 (default) agrees with direct differences to 1e-8 nats and takes ~10 s for the whole
    MNIST protocol on 2 cores; float32 halves that and moved the MNIST-size mean by ~1e-7 nats.
    Returns a float64 tensor [N] on data's device.
    """
    return _parzen_log_likelihoods(samples, data, [float(sigma)], batch_size, sample_chunk, dtype)[0]


def select_sigma(samples, validation, sigmas=None, *, batch_size=1000, sample_chunk=10000,
                 dtype=torch.float64):
    """Pick the Parzen bandwidth with the highest mean validation log-likelihood.

    sigmas defaults to logspace(-1, 0, 10), the grid of the GAN/AAE papers. Returns
    (best_sigma, {sigma: mean validation log-likelihood}) with python floats as keys;
    ties go to the first sigma of the grid. Each distance matrix is computed once for all sigmas.
    """
    sigmas = DEFAULT_SIGMAS if sigmas is None else torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    means = _parzen_log_likelihoods(samples, validation, sigmas, batch_size, sample_chunk, dtype).mean(1)
    scores = {float(s): float(m) for s, m in zip(sigmas.tolist(), means.tolist())}
    best = float(sigmas[int(torch.argmax(means))])
    return best, scores


def parzen_estimate(samples, validation, test, sigmas=None, *, batch_size=1000, sample_chunk=10000,
                    dtype=torch.float64):
    """The full protocol: choose sigma on `validation`, report the test log-likelihood.

    Returns dict(mean=, sem=, sigma=, scores=) in nats; sem = std / sqrt(N) of the per-example
    test log-likelihoods, with the population std (ddof=0) as in Goodfellow et al.'s parzen_ll.py.
    """
    kwargs = dict(batch_size=batch_size, sample_chunk=sample_chunk, dtype=dtype)
    sigma, scores = select_sigma(samples, validation, sigmas, **kwargs)
    ll = parzen_log_likelihood(samples, test, sigma, **kwargs)
    sem = ll.std(correction=0) / math.sqrt(ll.numel())
    return dict(mean=float(ll.mean()), sem=float(sem), sigma=sigma, scores=scores)


@torch.no_grad()
def reconstruction_errors(encode, decode, images, batch_size=1000, device=None):
    """Reconstruction error of decode(encode(x)) over `images` ([N, 1, 28, 28] or [N, 784], in [0, 1]).

    `decode` must return probabilities in [0, 1] of any shape with N * D elements. Put models in
    eval() mode first. Batches are moved to `device` (default: images' device).
    Returns dict(bce=mean over images of the per-pixel BCE summed over pixels (nats/image; log
    clamped at -100 by binary_cross_entropy), mse=mean squared error per pixel).
    """
    assert images.is_floating_point(), "images must be floats in [0, 1]"
    device = images.device if device is None else torch.device(device)
    n, dim = images.shape[0], images[0].numel()
    bce = mse = 0.0
    for batch in images.split(batch_size):
        x = batch.to(device=device, dtype=torch.float32)
        recon = decode(encode(x)).reshape(x.shape[0], dim).float()
        x = x.reshape(x.shape[0], dim)
        bce += float(F.binary_cross_entropy(recon, x, reduction="sum"))
        mse += float(F.mse_loss(recon, x, reduction="sum"))
    return dict(bce=bce / n, mse=mse / (n * dim))


def _vote(neighbour_labels, n_classes):
    """Majority label per row of [B, k] labels sorted nearest first; a tie goes to the tied label
    whose nearest occurrence is closest (so k=1 and plain ties reduce to the nearest neighbour)."""
    b, k = neighbour_labels.shape
    counts = torch.zeros(b, n_classes, dtype=torch.long, device=neighbour_labels.device)
    counts.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels))
    ranks = torch.arange(k, device=neighbour_labels.device).expand(b, k)
    first = torch.full((b, n_classes), k, dtype=torch.long, device=neighbour_labels.device)
    first.scatter_reduce_(1, neighbour_labels, ranks, reduce="amin")
    return (counts * (k + 1) - first).argmax(1)


@torch.no_grad()
def knn_accuracy(train_codes, train_labels, test_codes, test_labels, k=5, batch_size=1000):
    """Accuracy of a k-nearest-neighbour (euclidean) majority vote on latent codes.

    Ties between labels with equal votes are broken by the nearest neighbour: the tied label
    that occurs closest to the query wins. Labels may be any integers. Returns a float in [0, 1].
    """
    train_codes, test_codes = _flatten(train_codes).float(), _flatten(test_codes).float()
    assert k <= len(train_codes), f"k={k} exceeds the {len(train_codes)} training codes"
    classes, train_idx = torch.unique(train_labels, return_inverse=True)
    train_idx = train_idx.to(train_codes.device)
    test_codes = test_codes.to(train_codes.device)
    train_sq = (train_codes * train_codes).sum(1)
    preds = []
    for batch in test_codes.split(batch_size):
        # ||s||^2 - 2 x.s ranks neighbours like ||x - s||^2 (||x||^2 is constant per row), in one addmm
        d2 = torch.addmm(train_sq, batch, train_codes.T, alpha=-2.0)  # [B, N_train]
        nearest = d2.topk(k, dim=1, largest=False, sorted=True).indices  # [B, k], nearest first
        preds.append(_vote(train_idx[nearest], len(classes)))
    predicted = classes.to(train_codes.device)[torch.cat(preds)]
    return float((predicted.cpu() == test_labels.cpu()).double().mean())


def _median_distance(z, max_points=1000):
    """Median pairwise euclidean distance over (at most max_points) rows of z, diagonal excluded."""
    z = z[:max_points]
    d2 = _squared_distances(z, z)
    i, j = torch.triu_indices(len(z), len(z), offset=1, device=z.device)
    return float(d2[i, j].median().sqrt())


@torch.no_grad()
def mmd(x, y, *, bandwidths=None, max_points=2000, seed=0):
    """Unbiased estimate of squared MMD between samples x [N, D] and y [M, D] (can be slightly < 0).

    Kernel: sum over h in bandwidths of exp(-||a - b||^2 / (2 h^2)). Default bandwidths are
    (1/4, 1/2, 1, 2, 4) times the median pairwise distance of the pooled samples (median
    heuristic, multi-scale) — computed once per call, so compare codes to the prior with the
    same explicit `bandwidths` when comparing checkpoints. Each set is subsampled without
    replacement to at most `max_points` rows with a torch.Generator seeded by `seed`.
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = _flatten(x).double(), _flatten(y).double().to(x.device)
    assert len(x) >= 2 and len(y) >= 2, "mmd needs at least two points per set"
    if len(x) > max_points:
        x = x[torch.randperm(len(x), generator=gen)[:max_points].to(x.device)]
    if len(y) > max_points:
        y = y[torch.randperm(len(y), generator=gen)[:max_points].to(y.device)]
    if bandwidths is None:
        pooled = torch.cat([x[:500], y[:500]])
        median = _median_distance(pooled) or 1.0  # all points equal: any scale gives MMD 0
        bandwidths = [median * m for m in (0.25, 0.5, 1.0, 2.0, 4.0)]
    coeffs = [-0.5 / float(h) ** 2 for h in bandwidths]

    def kernel_sum(a, b, drop_diagonal):
        d2 = _squared_distances(a, b)
        k = sum(torch.exp(d2 * c) for c in coeffs)
        total = k.sum()
        if drop_diagonal:
            total = total - k.diagonal().sum()
        return total

    n, m = len(x), len(y)
    kxx = kernel_sum(x, x, True) / (n * (n - 1))
    kyy = kernel_sum(y, y, True) / (m * (m - 1))
    kxy = kernel_sum(x, y, False) / (n * m)
    return float(kxx + kyy - 2 * kxy)


def moment_match(codes, prior_mean, prior_std):
    """Per-dimension first two moments of codes [N, d] against the prior's (scalars or [d]).

    code_std is the unbiased std. mean_abs_error = mean over dimensions of |code_mean - prior_mean|,
    std_abs_error likewise for the stds; std_ratio = code_std / prior_std. Lists are python floats.
    """
    codes = _flatten(codes).double()
    d = codes.shape[1]
    prior_mean = torch.as_tensor(prior_mean, dtype=torch.float64, device=codes.device).expand(d)
    prior_std = torch.as_tensor(prior_std, dtype=torch.float64, device=codes.device).expand(d)
    code_mean, code_std = codes.mean(0), codes.std(0)
    return dict(
        code_mean=code_mean.tolist(), code_std=code_std.tolist(),
        prior_mean=prior_mean.tolist(), prior_std=prior_std.tolist(),
        mean_abs_error=float((code_mean - prior_mean).abs().mean()),
        std_abs_error=float((code_std - prior_std).abs().mean()),
        std_ratio=(code_std / prior_std).tolist(),
    )


def _cluster_ids(pred):
    """Cluster indices from [N] ids or [N, K] cluster probabilities/logits (argmax)."""
    pred = torch.as_tensor(pred)
    return pred.argmax(1) if pred.dim() == 2 else pred.long()


def exemplar_cluster_accuracy(pred_clusters, labels, train_probs, train_labels):
    """Accuracy when each cluster k takes the label of the one image of (train_probs, train_labels) that is
    surest of it, argmax_n q(y = k | x_n): the paper's labelling (Makhzani et al. §6, on a validation set).

    pred_clusters: [N] cluster ids or [N, K] probabilities; train_probs: [M, K] q(y|x) of the labelling images.
    """
    pred, labels = _cluster_ids(pred_clusters).cpu(), torch.as_tensor(labels).long().cpu()
    exemplar_labels = torch.as_tensor(train_labels).long().cpu()[train_probs.cpu().argmax(0)]  # [K]
    return float((exemplar_labels[pred] == labels).double().mean())


def cluster_accuracy(pred_clusters, labels, train_pred=None, train_labels=None):
    """Accuracy when each cluster is labelled with the majority label of its members.

    Majorities come from (train_pred, train_labels) when given, otherwise from the evaluated set
    itself. Ties go to the smallest label; a test cluster with no training member counts as an
    error. Predictions may be [N] cluster ids or [N, K] cluster probabilities.
    (Makhzani et al. Sec. 6 instead label each cluster by its most confident validation example.)
    """
    pred, labels = _cluster_ids(pred_clusters).cpu(), torch.as_tensor(labels).long().cpu()
    if train_pred is None:
        train_pred, train_labels = pred, labels
    else:
        assert train_labels is not None, "train_pred needs train_labels"
        train_pred, train_labels = _cluster_ids(train_pred).cpu(), torch.as_tensor(train_labels).long().cpu()
    classes, train_idx = torch.unique(train_labels, return_inverse=True)
    n_clusters = int(max(pred.max(), train_pred.max())) + 1
    counts = torch.bincount(train_pred * len(classes) + train_idx,
                            minlength=n_clusters * len(classes)).reshape(n_clusters, len(classes))
    majority = classes[counts.argmax(1)]  # argmax takes the first maximum, i.e. the smallest label
    correct = (majority[pred] == labels) & (counts.sum(1)[pred] > 0)
    return float(correct.double().mean())


def _benchmark():
    """Wall time of each metric at full MNIST size on random data."""
    gen = torch.Generator().manual_seed(0)

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        if isinstance(result, dict):
            result = {key: value for key, value in result.items() if key != "scores"}
        print(f"{name}: {time.perf_counter() - start:.2f} s -> {result}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    samples = torch.rand(10000, 784, generator=gen)
    valid, test = torch.rand(1000, 784, generator=gen), torch.rand(10000, 784, generator=gen)
    timed("parzen_estimate (S=10k, D=784, val 1k, test 10k, 10 sigmas)",
          lambda: parzen_estimate(samples, valid, test))
    codes = torch.randn(60000, 8, generator=gen)
    labels = torch.randint(0, 10, (60000,), generator=gen)
    tcodes, tlabels = torch.randn(10000, 8, generator=gen), torch.randint(0, 10, (10000,), generator=gen)
    timed("knn_accuracy (60k train, 10k test, d=8, k=5)",
          lambda: knn_accuracy(codes, labels, tcodes, tlabels))
    timed("mmd (60k vs 10k codes, d=8, subsampled to 2000)", lambda: mmd(codes, tcodes))
    timed("moment_match (60k, d=8)", lambda: moment_match(codes, 0.0, 1.0)["mean_abs_error"])
    timed("cluster_accuracy (10k test, 60k train, 16 clusters)",
          lambda: cluster_accuracy(tlabels % 16, tlabels, labels % 16, labels))


if __name__ == "__main__":
    _benchmark()
