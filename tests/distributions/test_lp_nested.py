"""LpNestedSymmetric and LpNestedTree against quadrature, closed forms, independent references and sample statistics."""

import contextlib
import math

import numpy as np
import pytest
import torch
from lp_nested_reference import np_lp_nested
from pyro.distributions import constraints
from pyro.distributions.testing.gof import auto_goodness_of_fit
from scipy import integrate, stats
from scipy.special import gammaln

from untwine.distributions import LpNestedSymmetric, LpNestedTree, LpNestedTreeError

TEST_FAILURE_RATE = 5e-4  # as in Pyro's own goodness-of-fit tests
F64 = torch.float64

# The three examples of the module docstring: Lp-spherical, eq. 6, and the paper's 20-D ISA layout (eq. 9).
DOC_TREES = [[3], [1, [2]], [[4], [4], [4], [4], [4]]]


def f64(x):
    return torch.as_tensor(x, dtype=F64)


def dist(tree, exponents, scale=1.0, **kw):
    return LpNestedSymmetric(tree, f64(exponents), f64(scale), **kw)


@contextlib.contextmanager
def seeded(seed):
    """A fixed torch seed for the block, without disturbing the global generator afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --- independent numpy references ---------------------------------------------------------------


def np_log_ball_volume(tree, exponents):
    """(n, log vol of the unit Lp-nested ball) by the Liouville/Dirichlet integral, recursively.

    For an inner node with exponent p and children c (n_c coordinates, unit-ball volume V_c; a leaf is [-1, 1]),
    polar coordinates in every child give V = prod_c(n_c V_c) * int_{sum r_c^p <= 1} prod_c r_c^{n_c - 1} dr, and
    t_c = r_c^p turns the integral into a Dirichlet integral: p^{-l} prod_c Gamma(n_c/p) / Gamma(n/p + 1).
    """
    exponents = list(exponents)
    counter = [0]

    def visit(node):
        p = exponents[counter[0]]
        counter[0] += 1
        children = []
        for child in node:
            if isinstance(child, list):
                children.append(visit(child))
            else:
                children.extend([(1, math.log(2.0))] * child)
        n = sum(nc for nc, _ in children)
        log_v = sum(math.log(nc) + lv + gammaln(nc / p) - math.log(p) for nc, lv in children) - gammaln(n / p + 1)
        return n, log_v

    return visit(tree)


def np_log_prob_liouville(tree, exponents, scale, z):
    """log of exp(-f^p0/s) / Z with Z = n V_f * int_0^inf r^(n-1) exp(-r^p0/s) dr = n V_f s^(n/p0) Gamma(n/p0)/p0."""
    p0 = exponents[0]
    n, log_v = np_log_ball_volume(tree, exponents)
    log_z = math.log(n) + log_v + (n / p0) * math.log(scale) + gammaln(n / p0) - math.log(p0)
    return -(np_lp_nested(tree, exponents, z) ** p0) / scale - log_z


def np_isa_log_prob(z, p0, ps, sizes, scale):
    """Sum over subspaces of the Lp-spherical density on R^{n_k} proportional to exp(-||z_k||_{p_k}^{p0} / s).

    Normaliser of one factor: int exp(-||x||_p^{p0}/s) dx = S * int_0^inf r^(d-1) exp(-r^p0/s) dr with the surface
    area S = d * vol(unit L^p ball) = d (2 Gamma(1 + 1/p))^d / Gamma(1 + d/p), and the radial integral
    s^(d/p0) Gamma(d/p0) / p0 (substitute u = r^p0 / s).
    """
    z = np.asarray(z, dtype=np.float64)
    total = 0.0
    start = 0
    for p, d in zip(ps, sizes):
        zk = z[..., start : start + d]
        start += d
        radius = (np.abs(zk) ** p).sum(-1) ** (1.0 / p)
        log_surface = math.log(d) + d * (math.log(2.0) + gammaln(1.0 + 1.0 / p)) - gammaln(1.0 + d / p)
        log_radial = (d / p0) * math.log(scale) + gammaln(d / p0) - math.log(p0)
        total = total - radius**p0 / scale - log_surface - log_radial
    return total


def gennorm_variance(p, s):
    """Variance of the density proportional to exp(-|x|^p / s): s^(2/p) Gamma(3/p) / Gamma(1/p)."""
    return math.exp((2.0 / p) * math.log(s) + gammaln(3.0 / p) - gammaln(1.0 / p))


def isa_variance(p0, ps, sizes, s):
    """Per-coordinate variance of the ISA prior from its factorisation (independent subspaces).

    In subspace k, z_k = R u with R^p0 ~ Gamma(n_k/p0, scale s) independent of u on the L^{p_k} sphere. The cone
    measure part E[u_j^2] is read off the i.i.d. generalised-normal case (where ||z||_p^p ~ Gamma(n/p, 1)):
    E[u_j^2] = Gamma(3/p) Gamma(n/p) / (Gamma(1/p) Gamma((n+2)/p)).
    """
    out = []
    for p, d in zip(ps, sizes):
        log_r2 = (2.0 / p0) * math.log(s) + gammaln((d + 2) / p0) - gammaln(d / p0)
        log_u2 = gammaln(3 / p) + gammaln(d / p) - gammaln(1 / p) - gammaln((d + 2) / p)
        out.extend([math.exp(log_r2 + log_u2)] * d)
    return np.array(out)


# --- LpNestedTree ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, leaves, inner, depth, subspaces",
    [
        ([3], 3, 1, 1, [[0], [1], [2]]),
        ([1, [2]], 3, 2, 2, [[0], [1, 2]]),
        ([[4], [4], [4], [4], [4]], 20, 6, 2, [list(range(4 * k, 4 * k + 4)) for k in range(5)]),
    ],
)
def test_tree_attributes_of_the_docstring_examples(spec, leaves, inner, depth, subspaces):
    """num_leaves, num_inner, depth and subspaces() of the three module-docstring trees."""
    tree = LpNestedTree(spec)
    assert (tree.num_leaves, tree.num_inner, tree.depth) == (leaves, inner, depth)
    assert tree.subspaces() == subspaces


def test_subspaces_group_each_root_child_in_a_mixed_deep_tree():
    """Leaves directly under the root are their own subspace; a subtree's leaves form one subspace."""
    tree = LpNestedTree([2, [3, [1]], 1, [[2], 1]])
    assert (tree.num_leaves, tree.num_inner, tree.depth) == (10, 5, 3)
    assert tree.subspaces() == [[0], [1], [2, 3, 4, 5], [6], [7, 8, 9]]


def test_tree_spec_is_normalised_and_trees_compare_by_structure():
    """Lists and tuples give the same normalised spec; equality and hashing follow the structure."""
    a, b = LpNestedTree([[4], (4,)]), LpNestedTree(((4,), [4]))
    assert a.spec == ((4,), (4,)) and a == b and hash(a) == hash(b)
    assert LpNestedTree(a) == a and a != LpNestedTree([[4], [3]])


@pytest.mark.parametrize("spec", [[], [0], [[]], 3, [1.5], [True], [2, [-1]], "ab", [[2], []]])
def test_malformed_trees_raise_lp_nested_tree_error(spec):
    """Empty nodes, non-positive/non-integer/bool counts and non-list roots raise LpNestedTreeError."""
    with pytest.raises(LpNestedTreeError):
        LpNestedTree(spec)


# --- normalisation by numerical integration -----------------------------------------------------


def truncation(p0, s):
    """Every |z_j| <= f(z), and P(f^p0 > 40 s) < 1e-15 for the n <= 4 used here, so [-B, B]^n holds the mass."""
    return (40.0 * s) ** (1.0 / p0)


@pytest.mark.parametrize("p", [0.8, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_2d_density_integrates_to_one_by_dblquad(p, s):
    """Tree [2]: 4 x the positive-quadrant dblquad of exp(log_prob) is 1 (substitution z = u^3 tames p < 1)."""
    d = dist([2], [p], s)

    def integrand(v, u):
        z = torch.tensor([u**3, v**3], dtype=F64)
        return math.exp(d.log_prob(z).item()) * 9.0 * (u * v) ** 2

    upper = truncation(p, s) ** (1.0 / 3.0)
    value, err = integrate.dblquad(integrand, 0.0, upper, 0.0, upper, epsabs=1e-7, epsrel=1e-7)
    assert err < 1e-5
    assert 4.0 * value == pytest.approx(1.0, abs=1e-4)


def gauss_legendre_orthant(d, n, s, nodes):
    """2^n x the tensor-product Gauss-Legendre integral of exp(log_prob) over the positive orthant (z = u^3)."""
    upper = truncation(d.exponents[0].item(), s) ** (1.0 / 3.0)
    x, w = np.polynomial.legendre.leggauss(nodes)
    u = (x + 1.0) * upper / 2.0
    z = torch.from_numpy(u**3)
    wz = torch.from_numpy(w * upper / 2.0 * 3.0 * u**2)
    points = torch.cartesian_prod(*[z] * n)
    weights = torch.cartesian_prod(*[wz] * n).prod(-1)
    return 2**n * (d.log_prob(points).exp() * weights).sum().item()


@pytest.mark.parametrize("p0, p1", [(0.8, 2.0), (2.0, 0.8), (0.7, 0.9), (1.0, 3.5), (3.5, 1.5), (2.5, 4.0)])
@pytest.mark.parametrize("s", [0.5, 1.5])
def test_nested_3d_density_integrates_to_one(p0, p1, s):
    """Eq. 6 tree [1, [2]]: the 3-D Gauss-Legendre integral of the density is 1."""
    total = gauss_legendre_orthant(dist([1, [2]], [p0, p1], s), 3, s, nodes=60)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "spec, exponents, n",
    [([1, [1, [2]]], [0.8, 2.5, 1.3], 4), ([[2], [2]], [3.0, 0.7, 1.9], 4), ([[1, [1, [1]]]], [1.2, 0.9, 2.5, 4.0], 3)],
)
def test_deeper_trees_integrate_to_one(spec, exponents, n):
    """Depth-3 trees and a 4-D ISA layout: the Gauss-Legendre integral of the density is 1."""
    total = gauss_legendre_orthant(dist(spec, exponents, 1.3), n, 1.3, nodes=32)
    assert total == pytest.approx(1.0, abs=1e-5)


# --- special cases and independent references ----------------------------------------------------


@pytest.mark.parametrize("p", [0.8, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("s", [0.5, 1.7])
def test_one_level_tree_is_a_product_of_generalised_normals(p, s):
    """Tree [4] with exponent p: log_prob is the sum of scipy gennorm(beta=p, scale=s^(1/p)) log-densities."""
    z = np.random.default_rng(0).standard_t(3, size=(50, 4))
    z[0] = 0.0
    z[1, :2] = 0.0
    expected = stats.gennorm(beta=p, scale=s ** (1.0 / p)).logpdf(z).sum(-1)
    got = dist([4], [p], s).log_prob(f64(z)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", [[3], [[2], [3]], [1, [2, [1]]]])
def test_all_exponents_two_with_scale_two_is_standard_normal(spec):
    """Every exponent 2 and s = 2 gives N(0, I), also for nested trees (the nesting collapses)."""
    tree = LpNestedTree(spec)
    z = np.random.default_rng(1).normal(size=(40, tree.num_leaves)) * 2.0
    z[0] = 0.0
    got = dist(tree, [2.0] * tree.num_inner, 2.0).log_prob(f64(z)).numpy()
    np.testing.assert_allclose(got, stats.norm.logpdf(z).sum(-1), rtol=1e-12, atol=1e-12)
    # float32 too, to float precision
    d32 = LpNestedSymmetric(tree, torch.full((tree.num_inner,), 2.0), torch.tensor(2.0))
    got32 = d32.log_prob(torch.tensor(z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got32, stats.norm.logpdf(z).sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec", [[3], [[2], [3]], [1, [2, [1]]]])
def test_all_exponents_two_with_scale_one_is_normal_with_variance_half(spec):
    """Every exponent 2 and s = 1 gives N(0, I/2)."""
    tree = LpNestedTree(spec)
    z = np.random.default_rng(2).normal(size=(40, tree.num_leaves))
    got = dist(tree, [2.0] * tree.num_inner, 1.0).log_prob(f64(z)).numpy()
    np.testing.assert_allclose(got, stats.norm(scale=math.sqrt(0.5)).logpdf(z).sum(-1), rtol=1e-12, atol=1e-12)


ISA_CASES = [
    (2.1, [2.2] * 5, [4] * 5, 1.0),  # the paper's dSprites prior
    (2.1, [2.2] * 5, [4] * 5, 0.3),
    (0.8, [2.5, 1.2, 3.0], [2, 3, 4], 1.7),
    (3.0, [0.7, 2.0], [1, 5], 0.6),
]


@pytest.mark.parametrize("p0, ps, sizes, s", ISA_CASES)
def test_isa_log_prob_factorises_over_subspaces(p0, ps, sizes, s):
    """isa() log_prob equals the sum of independent Lp-spherical subspace densities (numpy reference)."""
    n = sum(sizes)
    z = np.random.default_rng(3).standard_t(4, size=(60, n))
    z[0] = 0.0
    z[1, : sizes[0]] = 0.0  # one whole subspace at the origin
    d = LpNestedSymmetric.isa(f64(p0), f64(ps), sizes, f64(s))
    assert d.tree == LpNestedTree([[k] for k in sizes])
    np.testing.assert_allclose(d.exponents.numpy(), [p0, *ps])
    expected = np_isa_log_prob(z, p0, ps, sizes, s)
    np.testing.assert_allclose(d.log_prob(f64(z)).numpy(), expected, rtol=1e-11, atol=1e-10)


def test_batched_isa_log_prob_matches_the_reference_for_each_batch_member():
    """Batched p0, subspace exponents and scale are routed to the right batch member."""
    sizes = [2, 3, 1]
    p0 = [2.1, 0.9, 3.3]
    ps = [[2.2, 1.0, 0.5], [1.5, 4.0, 2.0], [0.8, 0.8, 3.0]]
    s = [1.0, 0.4, 2.5]
    d = LpNestedSymmetric.isa(f64(p0), f64(ps), sizes, f64(s))
    assert d.batch_shape == (3,)
    z = np.random.default_rng(4).normal(size=(7, 3, 6))
    got = d.log_prob(f64(z)).numpy()
    assert got.shape == (7, 3)
    for b in range(3):
        np.testing.assert_allclose(got[:, b], np_isa_log_prob(z[:, b], p0[b], ps[b], sizes, s[b]), rtol=1e-11)


@pytest.mark.parametrize(
    "spec, exponents",
    [
        ([1, [2]], [1.3, 0.6]),
        ([[4], [4], [4], [4], [4]], [2.1, 2.2, 0.9, 3.0, 2.2, 1.1]),
        ([2, [3, [1]], 1, [[2], 1]], [1.7, 0.8, 2.6, 1.1, 3.9]),
        ([[1, [1, [1]]]], [1.2, 0.9, 2.5, 4.0]),
    ],
)
def test_lp_nested_norm_matches_recursive_numpy_evaluation(spec, exponents):
    """lp_nested_norm equals f(z) computed by recursing over the nested lists (eqs. 6, 9)."""
    n = LpNestedTree(spec).num_leaves
    z = np.random.default_rng(5).normal(size=(30, n))
    z[0] = 0.0
    got = dist(spec, exponents).lp_nested_norm(f64(z)).numpy()
    np.testing.assert_allclose(got, np_lp_nested(spec, exponents, z), rtol=1e-12, atol=1e-300)


def test_isa_norm_is_the_root_norm_of_the_subspace_norms():
    """For isa(), lp_nested_norm is the p0-norm of the vector of subspace p_k-norms."""
    p0, ps, sizes = 2.1, [2.2, 0.9, 3.0], [4, 2, 3]
    z = np.random.default_rng(6).normal(size=(25, 9))
    edges = np.cumsum([0, *sizes])
    radii = np.stack([(np.abs(z[:, a:b]) ** p).sum(-1) ** (1 / p) for p, a, b in zip(ps, edges[:-1], edges[1:])], -1)
    expected = (radii**p0).sum(-1) ** (1 / p0)
    got = LpNestedSymmetric.isa(f64(p0), f64(ps), sizes).lp_nested_norm(f64(z)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize(
    "spec, exponents, s",
    [
        ([1, [2]], [0.8, 3.0], 1.4),
        ([2, [3, [1]], 1, [[2], 1]], [1.7, 0.8, 2.6, 1.1, 3.9], 0.7),
        ([[1, [1, [1]]], [2, [2]]], [1.2, 0.9, 2.5, 4.0, 0.6, 2.2], 2.0),
    ],
)
def test_log_prob_matches_the_liouville_normaliser_on_deep_trees(spec, exponents, s):
    """log_prob equals exp(-f^p0/s) normalised by the recursive Dirichlet-integral volume of the unit ball."""
    n = LpNestedTree(spec).num_leaves
    z = np.random.default_rng(7).normal(size=(30, n))
    z[0] = 0.0
    got = dist(spec, exponents, s).log_prob(f64(z)).numpy()
    np.testing.assert_allclose(got, np_log_prob_liouville(spec, exponents, s, z), rtol=1e-11, atol=1e-11)


# --- sampler against density --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, exponents, scale",
    [
        ([1], [[1.5]], [0.7]),
        ([1], [[0.6]], [1.0]),
        ([2], [[0.8], [3.0]], [0.5, 2.0]),  # two batch members sampled at once
        ([1, [2]], [[1.3, 0.7], [3.0, 2.2]], [1.0, 0.6]),
        ([1, [1, [2]]], [[0.8, 2.5, 1.3]], [1.2]),
    ],
)
def test_samples_pass_goodness_of_fit_against_log_prob(spec, exponents, scale):
    """Pyro's auto_goodness_of_fit of sample() against exp(log_prob), for every batch member."""
    d = dist(spec, exponents, scale)
    with seeded(0):
        samples = d.sample((20000,))
    probs = d.log_prob(samples).exp()
    for b in range(d.batch_shape[0]):
        gof = auto_goodness_of_fit(samples[:, b], probs[:, b])
        assert gof > TEST_FAILURE_RATE, (b, gof)


ISA_SAMPLER_CASES = [(2.1, [2.2] * 5, [4] * 5, 1.3), (0.8, [2.5, 1.2, 3.0], [2, 3, 4], 0.7)]


@pytest.fixture(scope="module", params=ISA_SAMPLER_CASES, ids=["paper-20d", "mixed-9d"])
def isa_samples(request):
    p0, ps, sizes, s = request.param
    d = LpNestedSymmetric.isa(f64(p0), f64(ps), sizes, f64(s))
    with seeded(1):
        z = d.sample((40000,))
    return d, (p0, ps, sizes, s), z


def test_isa_sample_radius_power_is_gamma_distributed(isa_samples):
    """KS test: f(z)^p0 of ISA samples follows Gamma(n/p0, scale s) (eq. 11)."""
    d, (p0, ps, sizes, s), z = isa_samples
    radius_power = (d.lp_nested_norm(z) ** p0).numpy()
    result = stats.kstest(radius_power, stats.gamma(a=sum(sizes) / p0, scale=s).cdf)
    assert result.pvalue > TEST_FAILURE_RATE, result


def test_isa_sample_subspace_norms_are_independent_gammas(isa_samples):
    """Each subspace's ||z_k||_{p_k}^p0 is Gamma(n_k/p0, s) (KS) and the subspace norms are uncorrelated."""
    _, (p0, ps, sizes, s), z = isa_samples
    z = z.numpy()
    edges = np.cumsum([0, *sizes])
    powers = np.stack([(np.abs(z[:, a:b]) ** p).sum(-1) ** (p0 / p) for p, a, b in zip(ps, edges[:-1], edges[1:])], -1)
    for k, d_k in enumerate(sizes):
        result = stats.kstest(powers[:, k], stats.gamma(a=d_k / p0, scale=s).cdf)
        assert result.pvalue > TEST_FAILURE_RATE, (k, result)
    corr = np.corrcoef(powers ** (1 / p0), rowvar=False)
    off_diagonal = corr[~np.eye(len(sizes), dtype=bool)]
    assert np.abs(off_diagonal).max() < 5.0 / math.sqrt(len(z)), corr


def test_isa_sample_moments_match_variance_and_zero_mean(isa_samples):
    """Per-coordinate sample variance matches .variance within 5 standard errors; mean 0 and symmetric signs."""
    d, _, z = isa_samples
    n_samples = z.shape[0]
    z = z.numpy()
    var = z.var(0)
    m4 = (z**4).mean(0)
    se = np.sqrt((m4 - var**2) / n_samples)
    assert np.all(np.abs(var - d.variance.numpy()) < 5 * se), (var, d.variance)
    assert np.all(np.abs(z.mean(0)) < 5 * np.sqrt(var / n_samples))
    assert np.all(np.abs((z > 0).mean(0) - 0.5) < 5 * 0.5 / math.sqrt(n_samples))


@pytest.mark.parametrize("p0, ps, sizes, s", ISA_CASES)
def test_isa_variance_matches_the_factorised_closed_form(p0, ps, sizes, s):
    """.variance of isa() equals E[R_k^2] E[u_j^2] per subspace, derived from the subspaces' independence."""
    d = LpNestedSymmetric.isa(f64(p0), f64(ps), sizes, f64(s))
    np.testing.assert_allclose(d.variance.numpy(), isa_variance(p0, ps, sizes, s), rtol=1e-12)


@pytest.mark.parametrize("p", [0.7, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_one_level_variance_is_the_generalised_normal_variance(p, s):
    """.variance of a one-level tree is s^(2/p) Gamma(3/p)/Gamma(1/p) in every coordinate."""
    np.testing.assert_allclose(dist([5], [p], s).variance.numpy(), [gennorm_variance(p, s)] * 5, rtol=1e-12)


@pytest.mark.parametrize("spec", [[3], [[2], [3]], [1, [2, [1]]], [[1, [1, [1]]], 2]])
def test_all_exponents_two_variance_is_half_the_scale(spec):
    """.variance with every exponent 2 is s/2 (the N(0, s/2 I) case): 1 for s = 2, 0.5 for s = 1."""
    tree = LpNestedTree(spec)
    for s in (2.0, 1.0, 0.3):
        np.testing.assert_allclose(dist(tree, [2.0] * tree.num_inner, s).variance.numpy(), s / 2, rtol=1e-12)


@pytest.mark.parametrize(
    "spec, exponents, s, expected",
    [
        ([3], [0.8], 1.5, gennorm_variance(0.8, 1.5)),
        ([3], [3.5], 0.5, gennorm_variance(3.5, 0.5)),
        ([[2], [1, [1]]], [2.0, 2.0, 2.0, 2.0], 2.0, 1.0),
        ([1, [2, [1]]], [2.0, 2.0, 2.0], 2.0, 1.0),
    ],
)
def test_sample_variance_matches_closed_forms_in_special_cases(spec, exponents, s, expected):
    """Sample variance of generalised-normal and Gaussian special cases matches the closed form (5 s.e.)."""
    d = dist(spec, exponents, s)
    with seeded(2):
        z = d.sample((40000,)).numpy()
    var = z.var(0)
    se = np.sqrt(((z**4).mean(0) - var**2) / len(z))
    assert np.all(np.abs(var - expected) < 5 * se), (var, expected, se)
    assert np.all(np.abs(z.mean(0)) < 5 * np.sqrt(var / len(z)))


@pytest.mark.parametrize("spec, exponents", [([1, [2]], [0.8, 3.0]), ([2, [1, [2]]], [1.5, 0.7, 2.5])])
def test_sample_variance_matches_variance_on_nested_trees(spec, exponents):
    """Sample variance of nested trees matches .variance within 5 standard errors per coordinate."""
    d = dist(spec, exponents, 0.9)
    with seeded(3):
        z = d.sample((40000,)).numpy()
    var = z.var(0)
    se = np.sqrt(((z**4).mean(0) - var**2) / len(z))
    assert np.all(np.abs(var - d.variance.numpy()) < 5 * se), (var, d.variance)


# --- gradients ------------------------------------------------------------------------------------

GRAD_CASES = [
    ([1, [2]], [0.8, 3.0], 1.4),  # parent exponent below the child's
    ([1, [2]], [3.0, 0.8], 0.7),  # parent exponent above the child's
    ([2, [1, [2]]], [1.5, 0.7, 2.5], 0.6),
    ([[4], [4], [4], [4], [4]], [2.1, 2.2, 2.2, 0.9, 3.0, 2.2], 1.0),  # the paper's p0 = 2.1 < p_k = 2.2
]


def jacobians(spec, exponents, scale, z, h=1e-6):
    """(autograd, central-difference) Jacobians of log_prob(z) w.r.t. [exponents..., scale], in float64."""
    params = f64([*exponents, scale])

    def log_prob(theta):
        return LpNestedSymmetric(spec, theta[:-1], theta[-1]).log_prob(z)

    analytic = torch.autograd.functional.jacobian(log_prob, params)
    numeric = torch.stack(
        [(log_prob(params + h * unit) - log_prob(params - h * unit)) / (2 * h) for unit in torch.eye(len(params))],
        -1,
    )
    return analytic, numeric


@pytest.mark.parametrize("spec, exponents, scale", GRAD_CASES)
def test_log_prob_gradients_match_finite_differences(spec, exponents, scale):
    """gradcheck of log_prob w.r.t. exponents and scale (float64) at generic points, some with zero coordinates."""
    n = LpNestedTree(spec).num_leaves
    z = torch.from_numpy(np.random.default_rng(8).normal(size=(6, n)))
    z[1, 0] = 0.0
    z[2, :2] = 0.0  # zero coordinates, but no inner node with all of its leaves at zero
    e = f64(exponents).requires_grad_()
    s = f64(scale).requires_grad_()

    def log_prob(e, s):
        return LpNestedSymmetric(spec, e, s).log_prob(z)

    assert torch.autograd.gradcheck(log_prob, (e, s), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("spec, exponents, scale", GRAD_CASES)
def test_log_prob_gradients_match_finite_differences_at_the_origin_and_at_zero_subtrees(spec, exponents, scale):
    """At z = 0 and where one inner node's leaves are all zero, exponent/scale gradients equal central differences.

    log_prob does not depend on a zero subtree's exponent there, so that partial derivative is exactly 0.
    """
    n = LpNestedTree(spec).num_leaves
    z = torch.from_numpy(np.random.default_rng(9).normal(size=(3, n)))
    z[0] = 0.0
    z[1, -2:] = 0.0  # the deepest subtree of [1, [2]] and [2, [1, [2]]]
    z[2, :4] = 0.0  # the first subspace of the ISA layout
    analytic, numeric = jacobians(spec, exponents, scale, z)
    assert torch.isfinite(analytic).all(), analytic
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("exponents", [[0.5, 0.8, 3.0, 2.2, 0.7], [2.1, 2.2, 2.2, 2.2, 2.2], [3.0, 0.8, 3.0, 2.2, 0.7]])
def test_log_prob_and_its_gradients_are_finite_at_the_origin(exponents):
    """At z = 0 the ISA log_prob is finite (even for p < 1) and its exponent/scale gradients are finite."""
    e = f64(exponents).requires_grad_()
    s = f64(0.4).requires_grad_()
    lp = LpNestedSymmetric([[4], [4], [4], [4]], e, s).log_prob(torch.zeros(16, dtype=F64))
    assert torch.isfinite(lp)
    lp.backward()
    assert torch.isfinite(e.grad).all() and torch.isfinite(s.grad), (e.grad, s.grad)


@pytest.mark.parametrize("p0, ps", [(2.1, [2.2, 2.2]), (2.2, [2.1, 2.1]), (1.5, [3.0, 1.2])])
def test_log_prob_gradient_in_z_is_zero_at_a_zero_subspace(p0, ps):
    """With every exponent > 1, f^p0 is O(|z_k|^p0) in a subspace at 0, so d log_prob / dz_k there is 0 (not NaN)."""
    d = LpNestedSymmetric.isa(f64(p0), f64(ps), [4, 4], f64(0.8))
    z = f64([[0.0] * 8, [0.0] * 4 + [0.3, -1.2, 0.5, 2.0]]).requires_grad_()
    d.log_prob(z).sum().backward()
    torch.testing.assert_close(z.grad[:, :4], torch.zeros(2, 4, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(z.grad[0], torch.zeros(8, dtype=F64), rtol=0, atol=1e-12)


# --- shapes and API -------------------------------------------------------------------------------


def test_batch_shape_broadcasts_exponents_and_scale():
    """Exponents (B, m) with scale (B,), (m,) with (B,), and (B, m) with (A, 1) broadcast to the batch shape."""
    spec = [1, [2]]
    assert LpNestedSymmetric(spec, torch.rand(4, 2) + 0.5, torch.rand(4) + 0.5).batch_shape == (4,)
    assert LpNestedSymmetric(spec, torch.tensor([1.0, 2.0]), torch.rand(5) + 0.5).batch_shape == (5,)
    d = LpNestedSymmetric(spec, torch.rand(4, 2) + 0.5, torch.rand(3, 1) + 0.5)
    assert d.batch_shape == (3, 4) and d.event_shape == (3,)
    assert d.exponents.shape == (3, 4, 2) and d.scale.shape == (3, 4)
    assert LpNestedSymmetric(spec, [1.0, 2.0]).batch_shape == ()


def test_sample_and_log_prob_shapes():
    """sample((S,)) is (S,) + batch + (n,); log_prob of (S, B, n) values is (S, B)."""
    d = LpNestedSymmetric([[2], [3]], torch.rand(4, 3) + 0.8, torch.rand(4) + 0.5)
    with seeded(4):
        x = d.sample((7,))
        assert d.sample().shape == (4, 5)
    assert x.shape == (7, 4, 5) and not x.requires_grad
    assert d.log_prob(x).shape == (7, 4)
    assert d.log_prob(torch.zeros(5)).shape == (4,)  # one point, broadcast over the batch
    assert d.log_prob(torch.zeros(2, 1, 5)).shape == (2, 4)


def test_expand_keeps_parameters_and_log_prob():
    """expand() broadcasts to a larger batch; samples and log_prob follow the new batch shape."""
    d = dist([1, [2]], [[0.8, 3.0], [2.0, 1.5]], [1.2, 0.4], validate_args=True)
    e = d.expand((3, 2))
    assert e.batch_shape == (3, 2) and e.event_shape == (3,) and e.tree == d.tree
    assert e.exponents.shape == (3, 2, 2) and e._validate_args
    z = torch.randn(5, 3, 2, 3, dtype=F64)
    np.testing.assert_allclose(e.log_prob(z).numpy(), d.log_prob(z).numpy())
    with seeded(5):
        assert e.sample((6,)).shape == (6, 3, 2, 3)
    np.testing.assert_allclose(e.variance.numpy(), d.variance.expand(3, 2, 3).numpy())


def test_distribution_properties():
    """support is real_vector, no rsample, event shape (n,), mean zero, exponents may require grad."""
    e = torch.tensor([2.1, 2.2, 2.2], requires_grad=True)
    d = LpNestedSymmetric([[3], [2]], e, 1.0)
    assert d.support is constraints.real_vector
    assert d.has_rsample is False
    assert d.event_shape == (5,) and d.batch_shape == ()
    assert torch.equal(d.mean, torch.zeros(5))
    with pytest.raises(NotImplementedError):
        d.rsample()
    d.log_prob(torch.ones(5)).backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exponents, scale", [([2.0, 0.0], 1.0), ([-1.0, 2.0], 1.0), ([2.0, 2.0], 0.0), ([2.0, 2.0], -0.5)]
)
def test_non_positive_parameters_raise_when_validating(exponents, scale):
    """Exponents or scale <= 0 raise ValueError with validate_args=True."""
    with pytest.raises(ValueError):
        LpNestedSymmetric([1, [2]], exponents, scale, validate_args=True)


def test_wrong_number_of_exponents_names_the_inner_node_count():
    """A wrong exponent count raises ValueError mentioning the tree's number of inner nodes."""
    with pytest.raises(ValueError, match="3 inner nodes"):
        LpNestedSymmetric([[2], [2]], [2.0, 2.0])
    with pytest.raises(ValueError, match="2 inner nodes"):
        LpNestedSymmetric([1, [2]], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="1 inner nodes"):
        LpNestedSymmetric([3], torch.tensor(2.0))


@pytest.mark.parametrize(
    "p0, exponents, sizes", [(2.0, [2.0, 2.0], [4, 4, 4]), (2.0, [2.0, 2.0], [4]), (2.0, [], []), (2.0, [2.0], [0])]
)
def test_isa_with_mismatched_or_empty_layout_raises(p0, exponents, sizes):
    """isa() rejects exponent/size count mismatches, an empty layout and empty subspaces."""
    with pytest.raises(ValueError):
        LpNestedSymmetric.isa(p0, exponents, sizes)


def test_log_prob_rejects_values_of_the_wrong_event_size():
    """With validation on, log_prob of a value with the wrong last dimension raises ValueError."""
    d = LpNestedSymmetric([1, [2]], [2.0, 2.0], 1.0, validate_args=True)
    with pytest.raises(ValueError):
        d.log_prob(torch.zeros(4))


# --- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sample_and_log_prob_match_cpu():
    """On CUDA the distribution samples there, and its log_prob matches the CPU log_prob of the same points."""
    exponents = f64([[2.1, 2.2, 0.9, 3.0], [0.8, 1.5, 2.0, 2.5]])
    scale = f64([1.3, 0.6])
    cpu = LpNestedSymmetric([[4], [1, [2]], 3], exponents, scale)
    gpu = LpNestedSymmetric([[4], [1, [2]], 3], exponents.cuda(), scale.cuda())
    with seeded(6):
        torch.cuda.manual_seed(6)
        x = gpu.sample((1000,))
    assert x.device.type == "cuda" and x.shape == (1000, 2, 10) and torch.isfinite(x).all()
    lp = gpu.log_prob(x)
    assert lp.device.type == "cuda"
    torch.testing.assert_close(lp.cpu(), cpu.log_prob(x.cpu()), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gpu.variance.cpu(), cpu.variance, rtol=1e-10, atol=1e-12)
