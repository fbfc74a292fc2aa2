"""Behaviour of priors.py: shapes, reproducibility, moments, component/segment placement, dispatch, describe()."""
import math

import pytest
import torch

import priors

N = 100_000


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def draw(name, n, seed=0, **params):
    if name == "categorical":
        return priors.categorical(n, 10, generator=gen(seed), **params)
    return priors.sample(name, n, 2, generator=gen(seed), **params)


def centres(n_components=10, radius=4.0):
    angle = torch.arange(n_components) * (2 * math.pi / n_components)
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)       # [K, 2]


@pytest.mark.parametrize("name,dim", [("gaussian", 3), ("uniform", 5), ("mixture", 2), ("swiss_roll", 2)])
def test_shape_dtype_device(name, dim):
    z = priors.sample(name, 7, dim, generator=gen())
    assert z.shape == (7, dim) and z.dtype == torch.float32 and z.device.type == "cpu"
    assert priors.sample(name, 0, dim, generator=gen()).shape == (0, dim)
    y = priors.categorical(7, 4, generator=gen())
    assert y.shape == (7, 4) and y.dtype == torch.float32


@pytest.mark.parametrize("name", priors.PRIORS + ("categorical",))
def test_same_seed_same_draw_other_seed_differs(name):
    assert torch.equal(draw(name, 1000, seed=3), draw(name, 1000, seed=3))
    assert not torch.equal(draw(name, 1000, seed=3), draw(name, 1000, seed=4))


def test_works_without_generator():
    z = priors.sample("mixture", 10, 2)
    assert z.shape == (10, 2) and torch.isfinite(z).all()


@pytest.mark.parametrize("std", [5.0, 0.5])
def test_gaussian_moments(std):
    z = priors.gaussian(N, 4, std=std, generator=gen())
    assert z.mean(0).abs().max() < 5 * std / math.sqrt(N)
    assert (z.std(0) / std - 1).abs().max() < 0.01
    assert torch.corrcoef(z.T).fill_diagonal_(0).abs().max() < 0.02   # independent dims


def test_mixture_components_sit_on_the_circle_and_are_elongated_radially():
    radius, std_r, std_t = 3.0, 0.8, 0.2
    for k in range(10):
        z = priors.mixture(20_000, radius=radius, std_radial=std_r, std_tangential=std_t,
                           index=torch.full((20_000,), k), generator=gen(k))
        centre = centres(radius=radius)[k]
        assert (z.mean(0) - centre).norm() < 0.03
        assert abs(z.mean(0).norm() - radius) < 0.03
        u = centre / radius
        along = (z - centre) @ u                                          # radial offset
        across = (z - centre) @ torch.stack([-u[1], u[0]])                # tangential offset
        assert abs(along.std() / std_r - 1) < 0.03 and abs(across.std() / std_t - 1) < 0.03


def test_mixture_components_equally_frequent_and_return_index_round_trips():
    z, k = priors.mixture(N, generator=gen(), return_index=True)
    assert k.dtype == torch.long and k.shape == (N,)
    counts = torch.bincount(k, minlength=10)
    assert (counts - N / 10).abs().max() < 5 * math.sqrt(N * 0.1 * 0.9)
    nearest = torch.cdist(z, centres()).argmin(1)
    assert (nearest == k).float().mean() > 0.99                           # returned index is the drawn component
    index = torch.arange(N) % 10
    _, back = priors.mixture(N, generator=gen(), index=index, return_index=True)
    assert torch.equal(back, index)


@pytest.mark.parametrize("n_components", [10, 4])
def test_mixture_index_puts_each_point_by_its_own_centre(n_components):
    index = torch.arange(N) % n_components
    z = priors.mixture(N, n_components=n_components, index=index, generator=gen())
    nearest = torch.cdist(z, centres(n_components)).argmin(1)
    assert (nearest == index).float().mean() > 0.99


def roll_position(z, scale=4.0):
    """(t, angle) of noise-free swiss-roll points: t = |z| / scale."""
    return z.norm(dim=1) / scale, torch.atan2(z[:, 1], z[:, 0])


def test_swiss_roll_points_lie_on_the_spiral():
    z = priors.swiss_roll(N, noise=0.0, generator=gen())
    t, angle = roll_position(z)
    assert t.max() <= 1.0
    wrapped = torch.remainder(angle - 2 * math.pi * priors.SWISS_ROLL_TURNS * t + math.pi, 2 * math.pi) - math.pi
    assert wrapped.abs().max() < 1e-3


def test_swiss_roll_index_restricts_to_its_segment_and_segments_are_ordered():
    K = 10
    index = torch.arange(N) % K
    z, back = priors.swiss_roll(N, noise=0.0, n_components=K, index=index, generator=gen(), return_index=True)
    assert torch.equal(back, index)
    u = roll_position(z)[0] ** 2                                          # position along the roll, in [0, 1)
    assert ((u >= index / K - 1e-5) & (u <= (index + 1) / K + 1e-5)).all()
    means = torch.stack([u[index == k].mean() for k in range(K)])
    assert (means.diff() > 0).all()                                       # segment k+1 lies further out


def test_swiss_roll_segments_equally_frequent_and_noise_is_isotropic_jitter():
    z, k = priors.swiss_roll(N, noise=0.3, generator=gen(), return_index=True)
    counts = torch.bincount(k, minlength=10)
    assert (counts - N / 10).abs().max() < 5 * math.sqrt(N * 0.1 * 0.9)
    jitter = z - priors.swiss_roll(N, noise=0.0, generator=gen())    # same draws, curve point removed
    assert (jitter.mean(0).abs() < 5 * 0.3 / math.sqrt(N)).all()
    assert ((jitter.std(0) / 0.3 - 1).abs() < 0.01).all()


@pytest.mark.parametrize("low,high", [(-1.0, 1.0), (-2.0, 3.0)])
def test_uniform_bounds_and_moments(low, high):
    z = priors.uniform(N, 3, low=low, high=high, generator=gen())
    assert z.min() >= low and z.max() < high
    std = (high - low) / math.sqrt(12)
    assert (z.mean(0) - (low + high) / 2).abs().max() < 5 * std / math.sqrt(N)
    assert (z.std(0) / std - 1).abs().max() < 0.01


def test_categorical_rows_are_one_hot_and_classes_uniform():
    y, index = priors.categorical(N, 10, generator=gen(), return_index=True)
    assert ((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all()
    assert torch.equal(y.argmax(1), index)
    assert (y.sum(0) - N / 10).abs().max() < 5 * math.sqrt(N * 0.1 * 0.9)


@pytest.mark.parametrize("name,params", [
    ("gaussian", {"std": 2.0}), ("uniform", {"low": 0.0, "high": 3.0}),
    ("mixture", {"n_components": 6, "radius": 2.0}), ("swiss_roll", {"scale": 2.0, "noise": 0.0}),
])
def test_sample_dispatch_equals_direct_call(name, params):
    direct = getattr(priors, name)(500, 2, generator=gen(7), **params)
    assert torch.equal(priors.sample(name, 500, 2, generator=gen(7), **params), direct)


@pytest.mark.parametrize("name", ["mixture", "swiss_roll"])
def test_sample_dispatch_passes_index(name):
    index = torch.arange(300) % 10
    z, k = priors.sample(name, 300, 2, generator=gen(1), index=index, return_index=True)
    direct = getattr(priors, name)(300, 2, generator=gen(1), index=index)
    assert torch.equal(z, direct) and torch.equal(k, index)


def test_user_errors_raise_value_error():
    with pytest.raises(ValueError, match="gaussian, mixture, swiss_roll, uniform"):
        priors.sample("laplace", 10, 2)
    with pytest.raises(ValueError, match="2-D"):
        priors.sample("mixture", 10, 8)
    with pytest.raises(ValueError, match="2-D"):
        priors.describe("swiss_roll", 3)
    with pytest.raises(ValueError, match="no components"):
        priors.sample("gaussian", 10, 2, index=torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        priors.mixture(3, index=torch.tensor([0, 10, 1]))
    with pytest.raises(ValueError, match="shape"):
        priors.swiss_roll(3, index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="high > low"):
        priors.uniform(3, 2, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="unknown prior"):
        priors.describe("laplace", 2)


@pytest.mark.parametrize("name,dim,params", [
    ("gaussian", 3, {}), ("gaussian", 2, {"std": 1.5}), ("uniform", 4, {}), ("uniform", 2, {"low": 1.0, "high": 5.0}),
    ("mixture", 2, {}), ("mixture", 2, {"n_components": 3, "radius": 2.0, "std_tangential": 0.5}),
    ("mixture", 2, {"n_components": 1}), ("swiss_roll", 2, {}), ("swiss_roll", 2, {"scale": 2.0, "noise": 0.5}),
])
def test_describe_matches_empirical_moments(name, dim, params):
    d = priors.describe(name, dim, **params)
    assert d["mean"].shape == d["std"].shape == (dim,) and d["mean"].dtype == torch.float32
    z = priors.sample(name, 200_000, dim, generator=gen(11), **params)
    tol = 5 * d["std"] / math.sqrt(200_000)
    assert ((z.mean(0) - d["mean"]).abs() < tol).all()
    assert ((z.std(0) / d["std"] - 1).abs() < 0.01).all()


def test_describe_closed_forms():
    assert torch.allclose(priors.describe("gaussian", 2)["std"], torch.tensor([5.0, 5.0]))
    assert torch.allclose(priors.describe("uniform", 1, low=0.0, high=6.0)["mean"], torch.tensor([3.0]))
    # equal-weight components on a circle: mean 0, per-axis variance (radius^2 + std_radial^2 + std_tangential^2) / 2
    d = priors.describe("mixture", 2)
    assert d["mean"].abs().max() < 1e-6
    assert torch.allclose(d["std"], torch.full((2,), math.sqrt((16 + 1 + 0.01) / 2)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generator_and_cpu_generator_to_cuda():
    z = priors.sample("mixture", 1000, 2, generator=gen(), device="cuda")
    assert z.device.type == "cuda" and torch.equal(z.cpu(), priors.sample("mixture", 1000, 2, generator=gen()))
    g1, g2 = (torch.Generator(device="cuda").manual_seed(5) for _ in range(2))
    a, ka = priors.sample("swiss_roll", 1000, 2, generator=g1, device="cuda", return_index=True)
    b = priors.sample("swiss_roll", 1000, 2, generator=g2, device="cuda")
    assert a.device.type == ka.device.type == "cuda" and torch.equal(a, b)
