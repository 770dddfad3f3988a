"""The blocked log-sum-exp engine of mixture densities, checked against references that do not share its code:
float64 brute force over every component, a closed form, and consistency between its outputs."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from untwine.metrics import mixture
from untwine.metrics.mixture import full_aggregate_log_density


def brute_force(z, loc, scale):
    """log q(z_s) and log q(z_sj) over all N components, in float64 with scipy."""
    z, loc, scale = (np.asarray(a, dtype=np.float64) for a in (z, loc, scale))
    lp = stats.norm.logpdf(z[:, None, :], loc[None], scale[None])  # (S, N, D)
    n = loc.shape[0]
    return logsumexp(lp.sum(-1), axis=1) - math.log(n), logsumexp(lp, axis=1) - math.log(n)


def torch_brute_force(z, loc, scale, groups=None):
    """The same in float64 with ``torch.logsumexp`` over all components, for ``(S, D)`` or ``(G, S, D)`` inputs;
    marginals per coordinate, or per group of coordinates."""
    z, loc, scale = z.double(), loc.double(), scale.double()
    lp = torch.distributions.Normal(loc.unsqueeze(-3), scale.unsqueeze(-3)).log_prob(z.unsqueeze(-2))  # (..., S, N, D)
    log_n = math.log(loc.shape[-2])
    joint = torch.logsumexp(lp.sum(-1), -1) - log_n
    if groups is None:
        marg = torch.logsumexp(lp, -2) - log_n
    else:
        marg = torch.stack([torch.logsumexp(lp[..., g].sum(-1), -1) - log_n for g in groups], -1)
    return joint, marg


def random_mixture(seed, g=None, s=9, n=50, d=3, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    lead = () if g is None else (g,)
    loc = 2 * torch.randn(*lead, n, d, generator=gen, dtype=dtype)
    scale = 0.05 + torch.rand(*lead, n, d, generator=gen, dtype=dtype)
    z = 2 * torch.randn(*lead, s, d, generator=gen, dtype=dtype)
    return z, loc, scale


class Spy:
    """Wraps a function of ``mixture`` and counts its calls."""

    def __init__(self, monkeypatch, name):
        self.calls = 0
        self.original = getattr(mixture, name)
        monkeypatch.setattr(mixture, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.original(*args, **kwargs)


# --- moved from test_decomposition.py --------------------------------------------------------------------------


def test_aggregate_density_is_stable_far_in_the_tails_and_in_groups():
    # narrow, far-apart components: every density underflows in float32 unless the log-sum-exp is done in logs
    loc = torch.tensor([[0.0, 0.0], [100.0, -50.0], [3.0, 1.0]])
    scale = torch.tensor([[0.01, 0.02], [0.05, 0.01], [1.0, 2.0]])
    z = torch.tensor([[50.0, 20.0], [0.0, 0.0], [101.0, -50.0], [-7.0, 3.0]])
    want_joint, want_marg = brute_force(z, loc, scale)
    for chunk in (1, 3, None):
        joint, marg = full_aggregate_log_density(z, loc, scale, chunk_elements=chunk)
        np.testing.assert_allclose(joint.numpy(), want_joint, rtol=1e-6)
        np.testing.assert_allclose(marg.numpy(), want_marg, rtol=1e-6)
    # a leading group axis evaluates independent mixtures
    z2, loc2, scale2 = torch.stack([z, z + 1]), torch.stack([loc, loc * 2]), torch.stack([scale, scale])
    joint, marg = full_aggregate_log_density(z2, loc2, scale2, chunk_elements=4)
    for g in range(2):
        wj, wm = brute_force(z2[g], loc2[g], scale2[g])
        np.testing.assert_allclose(joint[g].numpy(), wj, rtol=1e-6)
        np.testing.assert_allclose(marg[g].numpy(), wm, rtol=1e-6)
    assert full_aggregate_log_density(z, loc, scale, joint=False)[0] is None
    with pytest.raises(ValueError, match="disagree"):
        full_aggregate_log_density(z, loc[:, :1], scale[:, :1])


def test_grouped_marginals_are_the_log_density_of_each_coordinate_group():
    g = torch.Generator().manual_seed(3)
    loc, scale = torch.randn(50, 5, generator=g), 0.2 + torch.rand(50, 5, generator=g)
    z = torch.randn(7, 5, generator=g)
    groups = [[0, 1], [4], [2, 3]]
    _, marg = full_aggregate_log_density(z, loc, scale, joint=True, groups=groups, chunk_elements=40)
    lp = stats.norm.logpdf(z.double().numpy()[:, None, :], loc.double().numpy()[None], scale.double().numpy()[None])
    for k, group in enumerate(groups):
        want = logsumexp(lp[:, :, group].sum(-1), axis=1) - math.log(50)
        np.testing.assert_allclose(marg[:, k].numpy(), want, rtol=1e-5)


@pytest.mark.slow  # compiles the fused kernel (seconds with a warm compiler cache, up to a minute cold)
def test_compiled_kernel_gives_the_brute_force_densities_in_groups_padding_and_tails():
    g = torch.Generator().manual_seed(5)
    loc, scale = 3 * torch.randn(2, 2100, 4, generator=g), 0.01 + 0.5 * torch.rand(2, 2100, 4, generator=g)
    z = loc[:, :300] + scale[:, :300] * torch.randn(2, 300, 4, generator=g)  # 2100, 300: ragged, padded blocks
    z[1, 7] = torch.tensor([40.0, -40.0, 0.0, 1.0])  # far from every component: recomputed with a row maximum
    for groups in (None, [[0, 2], [1], [3]]):
        joint, marg = full_aggregate_log_density(z, loc, scale, groups=groups, compiled=True)
        for m in range(2):
            want_joint, want_marg = brute_force(z[m], loc[m], scale[m])
            np.testing.assert_allclose(joint[m].numpy(), want_joint, rtol=1e-5, atol=1e-4)
            if groups is None:
                np.testing.assert_allclose(marg[m].numpy(), want_marg, rtol=1e-5, atol=1e-4)
            else:
                lp = stats.norm.logpdf(
                    z[m].double().numpy()[:, None], loc[m].double().numpy(), scale[m].double().numpy()
                )
                for k, group in enumerate(groups):
                    want = logsumexp(lp[:, :, group].sum(-1), axis=1) - math.log(2100)
                    np.testing.assert_allclose(marg[m, :, k].numpy(), want, rtol=1e-5, atol=1e-4)


# --- the engine against independent references ------------------------------------------------------------------


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_float64_logsumexp_over_every_component(dtype, rtol):
    z, loc, scale = random_mixture(0, dtype=dtype)
    want_joint, want_marg = torch_brute_force(z, loc, scale)
    joint, marg = full_aggregate_log_density(z, loc, scale, compiled=False)
    assert joint.dtype == marg.dtype == dtype and joint.shape == (9,) and marg.shape == (9, 3)
    torch.testing.assert_close(joint.double(), want_joint, rtol=rtol, atol=rtol)
    torch.testing.assert_close(marg.double(), want_marg, rtol=rtol, atol=rtol)
    # samples drawn from the mixture itself (the typical use) and a leading axis of independent mixtures
    z3, loc3, scale3 = random_mixture(1, g=3, dtype=dtype)
    z3 = loc3[:, :9] + scale3[:, :9] * torch.randn(z3.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    want_joint, want_marg = torch_brute_force(z3, loc3, scale3)
    joint, marg = full_aggregate_log_density(z3, loc3, scale3, compiled=False)
    assert joint.shape == (3, 9) and marg.shape == (3, 9, 3)
    torch.testing.assert_close(joint.double(), want_joint, rtol=rtol, atol=rtol)
    torch.testing.assert_close(marg.double(), want_marg, rtol=rtol, atol=rtol)


def test_two_symmetric_components_match_their_closed_form():
    # q = (N(a 1, I) + N(-a 1, I)) / 2 in D dimensions has log q(z) = sum_j log phi(z_j) - D a^2 / 2
    # + log cosh(a sum_j z_j), and each coordinate's marginal the same with D = 1.
    a, d = 1.5, 3
    loc = torch.tensor([[a] * d, [-a] * d], dtype=torch.float64)
    scale = torch.ones(2, d, dtype=torch.float64)
    z = torch.tensor([[0.0, 0.0, 0.0], [0.3, -1.2, 2.0], [4.0, 3.5, 5.0], [-2.0, 0.1, -0.7]], dtype=torch.float64)

    def log_cosh(t):
        return t.abs() + torch.log1p(torch.exp(-2 * t.abs())) - math.log(2)

    log_phi = -0.5 * z**2 - 0.5 * math.log(2 * math.pi)
    want_joint = log_phi.sum(-1) - d * a**2 / 2 + log_cosh(a * z.sum(-1))
    want_marg = log_phi - a**2 / 2 + log_cosh(a * z)
    for chunk in (1, 5, None):
        joint, marg = full_aggregate_log_density(z, loc, scale, chunk_elements=chunk, compiled=False)
        torch.testing.assert_close(joint, want_joint, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(marg, want_marg, rtol=1e-12, atol=1e-12)
    # one component: the mixture is that Gaussian
    joint, marg = full_aggregate_log_density(z, loc[:1], scale[:1], compiled=False)
    gauss = -0.5 * (z - a) ** 2 - 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(joint, gauss.sum(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(marg, gauss, rtol=1e-12, atol=1e-12)


def test_rows_far_in_every_tail_are_recomputed_exactly(monkeypatch):
    # Sample 1 lies thousands of scales from every component: each shifted term is clamped at the smallest normal
    # number, so its fixed-shift sum is meaningless and the row must be redone with a per-row maximum.
    loc = torch.tensor([[0.0, 0.0], [1.0, -1.0], [0.5, 0.2]])
    scale = torch.tensor([[0.01, 0.02], [0.03, 0.01], [0.02, 0.05]])
    z = torch.tensor([[0.01, -0.01], [30.0, 40.0], [1.0, -1.0]])
    exact = Spy(monkeypatch, "_exact_log_sums")
    joint, marg = full_aggregate_log_density(z, loc, scale, compiled=False)
    assert exact.calls == 1
    want_joint, want_marg = torch_brute_force(z, loc, scale)
    assert want_joint[1] < -1e6  # far below anything a float32 exp can hold
    torch.testing.assert_close(joint.double(), want_joint, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(marg.double(), want_marg, rtol=1e-6, atol=1e-4)
    # marginals alone: a coordinate far in its tails triggers the recomputation as well
    z_one = torch.tensor([[0.0, 30.0]])
    calls = exact.calls
    _, marg = full_aggregate_log_density(z_one, loc, scale, joint=False, compiled=False)
    assert exact.calls == calls + 1
    torch.testing.assert_close(marg.double(), torch_brute_force(z_one, loc, scale)[1], rtol=1e-6, atol=1e-4)
    # samples near the components need no recomputation
    calls = exact.calls
    full_aggregate_log_density(loc + 0.01, loc, scale, compiled=False)
    assert exact.calls == calls


def test_tiny_blocks_visit_every_sample_and_component_in_several_blocks(monkeypatch):
    z, loc, scale = random_mixture(4, g=2, s=9, n=50, d=3)
    want_joint, want_marg = torch_brute_force(z, loc, scale)
    blocks = Spy(monkeypatch, "_block_sums")
    # 21 elements: blocks of one mixture x one sample x 7 components (the last of each row ragged: 50 = 7 * 7 + 1)
    joint, marg = full_aggregate_log_density(z, loc, scale, chunk_elements=21, compiled=False)
    assert blocks.calls == 2 * 9 * 8
    torch.testing.assert_close(joint.double(), want_joint, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(marg.double(), want_marg, rtol=1e-5, atol=1e-5)
    # a budget of one element per block and one that holds everything give the same numbers
    for chunk in (1, 10**8):
        j, m = full_aggregate_log_density(z, loc, scale, chunk_elements=chunk, compiled=False)
        torch.testing.assert_close(j.double(), want_joint, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.double(), want_marg, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chunk_elements must be positive"):
        full_aggregate_log_density(z, loc, scale, chunk_elements=0)


def test_marginals_and_joint_agree():
    z, loc, scale = random_mixture(6, s=8, n=40, d=4)
    joint, marg = full_aggregate_log_density(z, loc, scale, compiled=False)
    # asking for one output alone gives the same numbers
    only_joint, none = full_aggregate_log_density(z, loc, scale, marginals=False, compiled=False)
    assert none is None
    none, only_marg = full_aggregate_log_density(z, loc, scale, joint=False, compiled=False)
    assert none is None
    torch.testing.assert_close(only_joint, joint, rtol=0, atol=0)
    torch.testing.assert_close(only_marg, marg, rtol=0, atol=0)
    # one group of every coordinate is the joint; singleton groups are the per-coordinate marginals
    _, whole = full_aggregate_log_density(z, loc, scale, groups=[[0, 1, 2, 3]], compiled=False)
    torch.testing.assert_close(whole[:, 0], joint, rtol=1e-6, atol=1e-5)
    _, single = full_aggregate_log_density(z, loc, scale, groups=[[3], [0], [1], [2]], compiled=False)
    torch.testing.assert_close(single, marg[:, [3, 0, 1, 2]], rtol=1e-6, atol=1e-5)
    # in one dimension the joint is the marginal
    j1, m1 = full_aggregate_log_density(z[:, :1], loc[:, :1], scale[:, :1], compiled=False)
    torch.testing.assert_close(j1, m1[:, 0], rtol=1e-6, atol=1e-5)
    # against the reference, with groups
    groups = [[0, 2], [1, 3]]
    _, grouped = full_aggregate_log_density(z, loc, scale, groups=groups, compiled=False)
    torch.testing.assert_close(grouped.double(), torch_brute_force(z, loc, scale, groups)[1], rtol=1e-5, atol=1e-5)


def test_a_failed_compilation_falls_back_to_the_eager_blocks(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(mixture, "_COMPILED", {"fn": broken})
    z, loc, scale = random_mixture(7)
    want_joint, want_marg = torch_brute_force(z, loc, scale)
    with pytest.raises(RuntimeError, match="pass compiled=False"):
        full_aggregate_log_density(z, loc, scale, compiled=True)
    # chosen automatically (every problem counts as large here): a warning, the eager result, no second attempt
    monkeypatch.setattr(mixture, "_COMPILE_MIN_ELEMENTS", 0)
    joint, marg = full_aggregate_log_density(z, loc, scale)
    assert "broken" in mixture._COMPILED and mixture._compiled_block_sums() is None
    torch.testing.assert_close(joint.double(), want_joint, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(marg.double(), want_marg, rtol=1e-5, atol=1e-5)


def test_bad_shapes_and_groups_are_refused():
    z, loc, scale = random_mixture(8)
    with pytest.raises(ValueError, match=r"must be \(S, D\) or \(G, S, D\)"):
        full_aggregate_log_density(z[0], loc, scale)
    with pytest.raises(ValueError, match=r"must be \(S, D\) or \(G, S, D\)"):
        full_aggregate_log_density(z, loc, scale[:, :2])
    with pytest.raises(ValueError, match="disagree"):
        full_aggregate_log_density(z[None].expand(2, -1, -1), loc[None], scale[None])
    for bad in ([], [[0, 3]], [[]], [[1, 1]]):
        with pytest.raises(ValueError, match="group"):
            full_aggregate_log_density(z, loc, scale, groups=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_blocks_match_the_reference():
    z, loc, scale = random_mixture(9, g=2, s=300, n=5000, d=5)
    z[1, 3] = 40.0  # a row far in every tail
    want_joint, want_marg = torch_brute_force(z, loc, scale)
    for chunk in (None, 1000):
        joint, marg = full_aggregate_log_density(z.cuda(), loc.cuda(), scale.cuda(), chunk_elements=chunk)
        assert joint.device.type == "cuda"
        torch.testing.assert_close(joint.cpu().double(), want_joint, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(marg.cpu().double(), want_marg, rtol=1e-5, atol=1e-4)
