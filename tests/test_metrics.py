"""Known-answer tests for metrics.py: each metric against a closed form or a direct float64 reference."""
import math

import pytest
import torch

import metrics


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _direct_parzen(samples, data, sigma):
    """Reference: broadcast differences in float64, no matmul trick, no chunking."""
    s, x = samples.double().flatten(1), data.double().flatten(1)
    d2 = ((x[:, None, :] - s[None, :, :]) ** 2).sum(-1)  # [N, S]
    dim = s.shape[1]
    return (torch.logsumexp(-d2 / (2 * sigma**2), dim=1) - math.log(len(s))
            - 0.5 * dim * math.log(2 * math.pi * sigma**2))


# --- Parzen window -------------------------------------------------------------------------

def test_parzen_single_sample_is_a_gaussian_density():
    g = _gen()
    mu = torch.rand(1, 30, generator=g)
    x = torch.rand(50, 30, generator=g)
    sigma = 0.4
    expected = torch.distributions.Normal(mu.double(), sigma).log_prob(x.double()).sum(1)
    ll = metrics.parzen_log_likelihood(mu, x, sigma)
    assert ll.shape == (50,) and ll.dtype == torch.float64
    torch.testing.assert_close(ll, expected, rtol=0, atol=1e-9)


def test_parzen_on_its_own_samples_with_tiny_sigma():
    g = _gen(1)
    samples = torch.rand(40, 20, generator=g)  # pairwise distances ~1, so only the own kernel counts
    sigma = 1e-3
    ll = metrics.parzen_log_likelihood(samples, samples, sigma)
    limit = -math.log(40) - 0.5 * 20 * math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(ll, torch.full_like(ll, limit), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.2, 1.0])
def test_parzen_matches_direct_float64_reference_across_chunks(sigma):
    g = _gen(2)
    samples = torch.rand(230, 64, generator=g)
    data = torch.rand(150, 1, 8, 8, generator=g)  # image-shaped input is flattened
    expected = _direct_parzen(samples, data, sigma)
    # chunk sizes that divide neither set exercise the logaddexp over sample chunks
    ll = metrics.parzen_log_likelihood(samples, data, sigma, batch_size=64, sample_chunk=70)
    torch.testing.assert_close(ll, expected, rtol=0, atol=1e-8)
    ll32 = metrics.parzen_log_likelihood(samples, data, sigma, batch_size=64, sample_chunk=70,
                                         dtype=torch.float32)
    torch.testing.assert_close(ll32, expected, rtol=0, atol=2e-3)


def test_select_sigma_finds_the_analytic_optimum():
    # One sample at 0 and validation points with ||x||^2 = D s^2 exactly: the mean log-likelihood
    # -D s^2 / (2 sigma^2) - D/2 log(2 pi sigma^2) is maximised at sigma = s.
    g = _gen(3)
    dim, s = 16, 0.3
    x = torch.randn(100, dim, generator=g, dtype=torch.float64)  # float64 so the norm is exact
    x = x / x.norm(dim=1, keepdim=True) * math.sqrt(dim) * s
    grid = [0.1, 0.2, 0.3, 0.45, 0.7]
    best, scores = metrics.select_sigma(torch.zeros(1, dim), x, grid)
    assert best == pytest.approx(0.3)
    assert list(scores) == pytest.approx(grid)
    for sigma, score in scores.items():
        closed = -dim * s**2 / (2 * sigma**2) - 0.5 * dim * math.log(2 * math.pi * sigma**2)
        assert score == pytest.approx(closed, abs=1e-9)


def test_select_sigma_default_grid_and_argmax():
    g = _gen(4)
    samples = 0.5 * torch.randn(300, 10, generator=g)
    valid = 0.5 * torch.randn(100, 10, generator=g)
    best, scores = metrics.select_sigma(samples, valid)
    assert list(scores) == pytest.approx(torch.logspace(-1, 0, 10, dtype=torch.float64).tolist())
    assert best == max(scores, key=scores.get)
    assert best not in (min(scores), max(scores))  # the data put the optimum inside the grid
    # each score is the mean of the single-sigma estimate
    for sigma in (min(scores), best):
        assert scores[sigma] == pytest.approx(
            float(metrics.parzen_log_likelihood(samples, valid, sigma).mean()), abs=1e-9)


def test_parzen_estimate_mean_and_sem():
    g = _gen(5)
    samples, valid, test = (torch.rand(n, 12, generator=g) for n in (200, 50, 80))
    out = metrics.parzen_estimate(samples, valid, test, sigmas=[0.1, 0.2, 0.4])
    assert out["sigma"] == metrics.select_sigma(samples, valid, [0.1, 0.2, 0.4])[0]
    ll = _direct_parzen(samples, test, out["sigma"])
    assert out["mean"] == pytest.approx(float(ll.mean()), abs=1e-9)
    n = len(ll)
    sem = math.sqrt(float(((ll - ll.mean()) ** 2).sum()) / n) / math.sqrt(n)
    assert out["sem"] == pytest.approx(sem, rel=1e-9)
    assert sorted(out["scores"]) == pytest.approx([0.1, 0.2, 0.4])


# --- reconstruction ----------------------------------------------------------------------------

def _images(n=37, seed=6):
    x = torch.rand(n, 1, 28, 28, generator=_gen(seed))
    x[:, :, :3] = 0.0  # exact zeros and ones: zero entropy, and BCE must not give nan
    x[:, :, -3:] = 1.0
    return x


def test_reconstruction_identity_gives_entropy_and_zero_mse():
    x = _images()
    out = metrics.reconstruction_errors(lambda v: v, lambda z: z, x, batch_size=10)
    p = x.double().clamp(1e-300, 1)
    q = (1 - x.double()).clamp(1e-300, 1)
    entropy = -(x.double() * p.log() + (1 - x.double()) * q.log()).flatten(1).sum(1).mean()
    assert out["bce"] == pytest.approx(float(entropy), rel=1e-5)
    assert out["mse"] == 0.0


def test_reconstruction_constant_half_decoder():
    x = _images().flatten(1)  # [N, 784] input works too
    decode = lambda z: torch.full((len(z), 784), 0.5)  # noqa: E731
    out = metrics.reconstruction_errors(lambda v: v[:, :2], decode, x, batch_size=16)
    assert out["bce"] == pytest.approx(784 * math.log(2), rel=1e-6)
    assert out["mse"] == pytest.approx(float(((x.double() - 0.5) ** 2).mean()), rel=1e-6)


def test_reconstruction_runs_without_grad():
    seen = []
    out = metrics.reconstruction_errors(lambda v: seen.append(torch.is_grad_enabled()) or v,
                                        lambda z: z, _images(5))
    assert seen == [False] and out["mse"] == 0.0


# --- latent k-NN -------------------------------------------------------------------------------

def test_knn_separated_clusters_is_perfect():
    g = _gen(7)
    centres = 20 * torch.randn(10, 8, generator=g)
    labels = torch.arange(10).repeat_interleave(100)
    train = centres[labels] + torch.randn(1000, 8, generator=g)
    test_labels = torch.arange(10).repeat(30)
    test = centres[test_labels] + torch.randn(300, 8, generator=g)
    assert metrics.knn_accuracy(train, labels + 100, test, test_labels + 100, k=5, batch_size=64) == 1.0


def test_knn_random_labels_is_chance():
    g = _gen(8)
    train, test = torch.randn(3000, 4, generator=g), torch.randn(2000, 4, generator=g)
    acc = metrics.knn_accuracy(train, torch.randint(0, 10, (3000,), generator=g),
                               test, torch.randint(0, 10, (2000,), generator=g), k=5)
    assert 0.06 < acc < 0.14


def test_knn_vote_and_tie_break():
    train = torch.tensor([[0.0], [1.0], [1.2], [10.0]])
    labels = torch.tensor([3, 1, 1, 7])
    # k=2 from 0.1: one vote each for 3 (nearest) and 1 -> the nearest neighbour's label wins
    assert metrics.knn_accuracy(train, labels, torch.tensor([[0.1]]), torch.tensor([3]), k=2) == 1.0
    assert metrics.knn_accuracy(train, labels, torch.tensor([[0.9]]), torch.tensor([1]), k=2) == 1.0
    # k=3 from 0.1: label 1 has two votes and beats the nearest neighbour's 3
    assert metrics.knn_accuracy(train, labels, torch.tensor([[0.1]]), torch.tensor([1]), k=3) == 1.0


# --- prior match -------------------------------------------------------------------------------

def test_mmd_same_vs_shifted_distribution():
    g = _gen(9)
    x, y = torch.randn(3000, 2, generator=g), torch.randn(3000, 2, generator=g)
    same = metrics.mmd(x, y)
    shifted = metrics.mmd(x, y + 1.0)
    assert abs(same) < 2e-3
    assert shifted > 0.05 and shifted > 20 * abs(same)
    assert metrics.mmd(x, y) == same  # fixed-seed subsampling (3000 > max_points)


def test_mmd_known_answer_with_explicit_bandwidth():
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    e = math.exp
    kxx, kyy = e(-0.5), e(-2.0)  # unbiased: off-diagonal pairs only
    kxy = (1 + e(-2.0) + e(-0.5) + e(-0.5)) / 4
    assert metrics.mmd(x, y, bandwidths=[1.0]) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    # a sum of kernels adds the per-kernel MMDs
    two = metrics.mmd(x, y, bandwidths=[1.0, 2.0])
    assert two == pytest.approx(metrics.mmd(x, y, bandwidths=[1.0]) + metrics.mmd(x, y, bandwidths=[2.0]))


def test_moment_match_values():
    codes = torch.tensor([[-1.0, 0.0], [1.0, 2.0]])
    out = metrics.moment_match(codes, 0.0, 1.0)
    assert out["code_mean"] == pytest.approx([0.0, 1.0])
    assert out["code_std"] == pytest.approx([math.sqrt(2), math.sqrt(2)])
    assert out["prior_mean"] == [0.0, 0.0] and out["prior_std"] == [1.0, 1.0]
    assert out["mean_abs_error"] == pytest.approx(0.5)
    assert out["std_abs_error"] == pytest.approx(math.sqrt(2) - 1)  # |sqrt 2 - 1| in each dimension
    assert out["std_ratio"] == pytest.approx([math.sqrt(2), math.sqrt(2)])
    per_dim = metrics.moment_match(codes, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    assert per_dim["mean_abs_error"] == pytest.approx(0.0)
    assert per_dim["std_abs_error"] == pytest.approx(0.5)  # (|sqrt 2 - 1| + |sqrt 2 - 2|) / 2 = 1 / 2
    assert per_dim["std_ratio"] == pytest.approx([math.sqrt(2), math.sqrt(2) / 2])


# --- clustering --------------------------------------------------------------------------------

def test_cluster_accuracy_permuted_labels_is_perfect():
    labels = torch.arange(10).repeat(20)
    perm = torch.randperm(16, generator=_gen(10))[:10]  # 10 of 16 clusters used, in another order
    assert metrics.cluster_accuracy(perm[labels], labels) == 1.0
    probs = torch.nn.functional.one_hot(perm[labels], 16).float()  # [N, K] probabilities work too
    assert metrics.cluster_accuracy(probs, labels) == 1.0


def test_exemplar_cluster_accuracy_labels_each_cluster_by_its_surest_image():
    train_probs = torch.tensor([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6]])
    train_labels = torch.tensor([4, 7, 2, 9])  # the surest of cluster 0: image 0 (4); of 1: image 2 (2); of 2: image 3 (9)
    test_pred = torch.tensor([0, 1, 2, 2, 0])
    assert metrics.exemplar_cluster_accuracy(test_pred, torch.tensor([4, 2, 9, 9, 7]), train_probs, train_labels) == 0.8
    # a majority of cluster 0's training images (images 0 and 1 by argmax: labels 4 and 7, tie to 4) agrees here,
    # but one sure image of the wrong class flips a whole cluster under this labelling
    flipped = torch.tensor([4, 7, 2, 3])
    assert metrics.exemplar_cluster_accuracy(test_pred, torch.tensor([4, 2, 9, 9, 7]), train_probs, flipped) == 0.4


def test_cluster_accuracy_majority_from_training_set():
    train_pred = torch.tensor([0, 0, 0, 1, 1, 2])
    train_labels = torch.tensor([5, 5, 6, 7, 7, 8])  # cluster 0 -> 5, 1 -> 7, 2 -> 8
    test_pred = torch.tensor([0, 0, 1, 3])  # cluster 3 never seen in training: an error
    test_labels = torch.tensor([5, 6, 7, 5])  # 5: what an unseen cluster would get by default
    acc = metrics.cluster_accuracy(test_pred, test_labels, train_pred, train_labels)
    assert acc == pytest.approx(0.5)
    # without a training set the majorities come from the evaluated set: 0 -> tie 5/6 -> 5, 1 -> 7, 3 -> 5
    assert metrics.cluster_accuracy(test_pred, test_labels) == pytest.approx(0.75)
