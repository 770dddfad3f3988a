"""Property-based tests of LpNestedSymmetric, LpNestedTree and the ISA layout: random trees (depth 1-3, random
branching), exponents and scales, checked against numpy recursions, quadrature and closed forms written here."""

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lp_nested_reference import np_lp_nested
from scipy import integrate
from scipy.special import gammaincinv

from untwine.distributions import LpNestedSymmetric, LpNestedTree, LpNestedTreeError

F64 = torch.float64
# derandomised so CI sees the same examples every run; no example database in the repository
PROPERTY = dict(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])


def _trees(max_depth: int, max_children: int = 3, max_leaves: int = 3):
    """List notation of trees of depth 1..max_depth: an inner node holds 1..max_children children, each a leaf count
    or (above the deepest level) a subtree."""

    def node(depth: int):
        leaf = st.integers(1, max_leaves)
        child = leaf if depth == 1 else st.one_of(leaf, st.deferred(lambda: node(depth - 1)))
        return st.lists(child, min_size=1, max_size=max_children)

    return st.integers(1, max_depth).flatmap(node)


def _inner_nodes(tree) -> int:
    return 1 + sum(_inner_nodes(c) for c in tree if isinstance(c, list))


def _leaves(tree) -> int:
    return sum(_leaves(c) if isinstance(c, list) else c for c in tree)


def _depth(tree) -> int:
    return 1 + max((_depth(c) for c in tree if isinstance(c, list)), default=0)


@st.composite
def _distributions(draw, max_depth=3, low=0.5, high=4.0, max_leaves=3):
    tree = draw(_trees(max_depth, max_leaves=max_leaves))
    exponents = draw(st.lists(st.floats(low, high), min_size=_inner_nodes(tree), max_size=_inner_nodes(tree)))
    scale = draw(st.floats(0.2, 5.0))
    return tree, exponents, scale


def _dist(tree, exponents, scale, **kw):
    return LpNestedSymmetric(tree, torch.tensor(exponents, dtype=F64), torch.tensor(scale, dtype=F64), **kw)


# --- the tree ----------------------------------------------------------------------------------------


@settings(max_examples=60, **PROPERTY)
@given(_trees(3))
def test_tree_counts_leaves_inner_nodes_and_depth_and_its_subspaces_partition_the_coordinates(tree):
    t = LpNestedTree(tree)
    assert (t.num_leaves, t.num_inner, t.depth) == (_leaves(tree), _inner_nodes(tree), _depth(tree))
    groups = t.subspaces()
    assert [j for g in groups for j in g] == list(range(t.num_leaves))
    expected = [_leaves(c) if isinstance(c, list) else 1 for c in tree for _ in range(1 if isinstance(c, list) else c)]
    assert [len(g) for g in groups] == expected


@settings(max_examples=60, **PROPERTY)
@given(_distributions(), st.data())
def test_log_prob_is_finite_and_its_shape_follows_the_norm_of_a_numpy_recursion(case, data):
    tree, exponents, scale = case
    d = _dist(tree, exponents, scale)
    n = d.tree.num_leaves
    points = data.draw(st.lists(st.lists(st.floats(-6.0, 6.0), min_size=n, max_size=n), min_size=1, max_size=4))
    z = torch.tensor(points + [[0.0] * n], dtype=F64)
    log_p = d.log_prob(z)
    assert log_p.shape == (len(z),) and torch.isfinite(log_p).all()
    # log rho(z) = const - f(z)^p0 / s (eq. 11 with eq. 7): differences from the origin are the numpy norm's
    f = np_lp_nested(tree, exponents, z.numpy())
    np.testing.assert_allclose((log_p - log_p[-1]).numpy(), -(f ** exponents[0]) / scale, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, **PROPERTY)
@given(st.integers(1, 3), st.floats(0.5, 4.0), st.floats(0.6, 4.0), st.floats(0.2, 5.0))
def test_one_dimensional_density_integrates_to_one(depth, p0, p_inner, scale):
    """The only 1-D trees are [1], [[1]], [[[1]]]; the inner exponents then cancel out of the density."""
    tree = [1]
    for _ in range(depth - 1):
        tree = [tree]
    d = _dist(tree, [p0] + [p_inner] * (depth - 1), scale)
    radius = (scale * gammaincinv(1.0 / p0, 1.0 - 1e-13)) ** (1.0 / p0)  # all but 1e-13 of the mass inside
    density = lambda x: math.exp(d.log_prob(torch.tensor([x], dtype=F64)).item())  # noqa: E731
    mass, _ = integrate.quad(density, 0.0, radius, epsabs=1e-11, epsrel=1e-10, limit=400)
    assert 2 * mass == pytest.approx(1.0, abs=1e-7)


TWO_D_TREES = [[2], [1, 1], [[2]], [[1], [1]], [1, [1]], [[1], 1], [[[1]], 1], [[[2]]], [[1, 1]], [[[1], [1]]]]


def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


@settings(max_examples=40, **PROPERTY)
@given(st.sampled_from(TWO_D_TREES), st.data())
def test_two_dimensional_density_integrates_to_one(tree, data):
    r"""Gauss-Legendre quadrature of the density over the plane, as 4 times the positive quadrant (the density is
    symmetric in each sign) in coordinates :math:`x = r u, y = r (1 - u)` (Jacobian :math:`r`).

    The radial nodes :math:`r = r_{max} t^3` smooth the cusp at the origin of exponents below 1, the angular ones
    cluster at the axes. :math:`|z_j| \le f(z)` for every Lp-nested function, so :math:`f(u, 1 - u) \ge 1/2` and
    :math:`r \le 2R` covers the ball :math:`f \le R` holding all but 1e-13 of the mass. Over 200 random cases this
    quadrature is within 1e-13 of 1; a normaliser off by any factor of 2, Gamma ratio or power of s would miss by far
    more than the tolerance.
    """
    m = _inner_nodes(tree)
    exponents = data.draw(st.lists(st.floats(0.5, 4.0), min_size=m, max_size=m))
    scale = data.draw(st.floats(0.2, 5.0))
    d = _dist(tree, exponents, scale)
    p0 = exponents[0]
    r_max = 2 * (scale * gammaincinv(2.0 / p0, 1.0 - 1e-13)) ** (1.0 / p0)
    v, wv = _gauss_legendre(200)
    u, du = (1 - np.cos(np.pi * v)) / 2, np.pi * np.sin(np.pi * v) / 2 * wv
    t, wt = _gauss_legendre(400)
    r, dr = r_max * t**3, 3 * r_max * t**2 * wt
    uu, rr = np.meshgrid(u, r, indexing="ij")
    density = d.log_prob(torch.tensor(np.stack([rr * uu, rr * (1 - uu)], -1), dtype=F64)).exp().numpy()
    mass = 4 * (density * rr * du[:, None] * dr[None, :]).sum()
    assert mass == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=30, **PROPERTY)
@given(_distributions(max_depth=3, low=0.6, high=4.0), st.lists(st.integers(1, 3), max_size=2), st.integers(0, 2**16))
def test_samples_have_the_sample_shape_are_finite_and_have_the_radial_law(case, sample_shape, seed):
    """f(z)^p0 / s is Gamma(n/p0, 1) (eq. 11): its mean n/p0 and variance n/p0 give a 5-sigma check of the sampler,
    with f from the numpy recursion."""
    tree, exponents, scale = case
    d = _dist(tree, exponents, scale)
    n = d.tree.num_leaves
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        z = d.sample(torch.Size(sample_shape))
        big = d.sample((4000,))
    assert z.shape == tuple(sample_shape) + (n,) and z.dtype == F64 and torch.isfinite(z).all()
    assert torch.isfinite(big).all()
    g = np_lp_nested(tree, exponents, big.numpy()) ** exponents[0] / scale
    k = n / exponents[0]
    assert abs(g.mean() - k) < 5 * math.sqrt(k / len(g))


@settings(max_examples=40, **PROPERTY)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=4),
    st.floats(0.5, 4.0),
    st.data(),
    st.floats(0.2, 5.0),
)
def test_isa_layout_is_the_tree_of_one_subspace_per_size_and_factorises_over_subspaces(sizes, p0, data, scale):
    """Eq. 9: log rho(z) - log rho(0) = -sum_k ||z_k||_{p_k}^{p0} / s, each subspace on its own."""
    ps = data.draw(st.lists(st.floats(0.5, 4.0), min_size=len(sizes), max_size=len(sizes)))
    d = LpNestedSymmetric.isa(torch.tensor(p0, dtype=F64), torch.tensor(ps, dtype=F64), sizes, scale)
    assert d.tree == LpNestedTree([[s] for s in sizes])
    bounds = np.cumsum([0] + sizes)
    assert d.tree.subspaces() == [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    z = torch.tensor(data.draw(st.lists(st.floats(-4.0, 4.0), min_size=sum(sizes), max_size=sum(sizes))), dtype=F64)
    expected = -sum(
        (np.abs(z.numpy()[a:b]) ** p).sum() ** (p0 / p) / scale for p, a, b in zip(ps, bounds[:-1], bounds[1:])
    )
    assert (d.log_prob(z) - d.log_prob(torch.zeros_like(z))).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


# --- bad input ---------------------------------------------------------------------------------------

BAD_CHILDREN = [0, -1, -3, 1.5, 2.0, True, False, "2", None, []]


@settings(max_examples=40, **PROPERTY)
@given(_trees(2), st.sampled_from(BAD_CHILDREN), st.data())
def test_a_tree_with_one_bad_child_anywhere_raises_a_tree_error_naming_its_place(tree, bad, data):
    """Replace one child (at any depth) by something that is neither a positive int nor a non-empty list."""
    tree = copy.deepcopy(tree)
    node = tree
    while True:
        k = data.draw(st.integers(0, len(node) - 1))
        if isinstance(node[k], list) and data.draw(st.booleans()):
            node = node[k]
            continue
        node[k] = bad
        break
    message = "has no children" if bad == [] else f"is {bad!r}; a child is a positive int"
    with pytest.raises(LpNestedTreeError, match="root") as err:
        LpNestedTree(tree)
    assert message in str(err.value)
    with pytest.raises(LpNestedTreeError):
        LpNestedSymmetric(tree, [2.0])


@pytest.mark.parametrize("root", [3, "abc", None, 2.5])
def test_a_root_that_is_not_a_list_raises_a_tree_error(root):
    with pytest.raises(LpNestedTreeError, match="the root of an Lp-nested tree must be a list of children"):
        LpNestedTree(root)


NOT_POSITIVE_FINITE = [0.0, -0.5, -2.0, float("nan"), float("inf"), float("-inf")]


@settings(max_examples=40, **PROPERTY)
@given(_distributions(), st.sampled_from(NOT_POSITIVE_FINITE), st.data())
def test_a_non_positive_or_non_finite_exponent_raises_when_validating(case, bad, data):
    tree, exponents, scale = case
    exponents[data.draw(st.integers(0, len(exponents) - 1))] = bad
    with pytest.raises(ValueError, match=r"exponents must be positive and finite \(one per inner node, root first\)"):
        _dist(tree, exponents, scale, validate_args=True)


@settings(max_examples=30, **PROPERTY)
@given(_distributions(), st.sampled_from(NOT_POSITIVE_FINITE), st.integers(0, 3))
def test_a_non_positive_or_non_finite_scale_raises_when_validating(case, bad, where):
    tree, exponents, _ = case
    scale = torch.full((4,), 1.5, dtype=F64)
    scale[where] = bad
    exps = torch.tensor(exponents, dtype=F64)
    with pytest.raises(ValueError, match="scale must be positive and finite, got"):
        LpNestedSymmetric(tree, exps, scale, validate_args=True)


@settings(max_examples=30, **PROPERTY)
@given(_distributions(), st.data())
def test_a_wrong_number_of_exponents_names_the_inner_node_count(case, data):
    tree, exponents, scale = case
    m = len(exponents)
    count = data.draw(st.integers(0, m + 3).filter(lambda k: k != m))
    with pytest.raises(ValueError, match=f"has {m} inner nodes, so exponents needs {m} values"):
        LpNestedSymmetric(tree, torch.full((count,), 2.0, dtype=F64), scale)


@settings(max_examples=30, **PROPERTY)
@given(_distributions(), st.integers(-2, 2).filter(lambda k: k != 0), st.booleans())
def test_values_of_the_wrong_event_size_raise_with_and_without_validation(case, offset, validate):
    tree, exponents, scale = case
    d = _dist(tree, exponents, scale, validate_args=validate)
    size = max(d.tree.num_leaves + offset, 0)
    with pytest.raises(ValueError, match="event"):
        d.log_prob(torch.zeros(3, size, dtype=F64))


def test_a_scale_that_does_not_broadcast_with_the_exponents_batch_raises():
    with pytest.raises(ValueError, match=r"scale of shape \(4,\) does not broadcast with the batch shape \(3,\)"):
        LpNestedSymmetric([2], torch.full((3, 1), 2.0), torch.ones(4))


@pytest.mark.parametrize("exponents", [["a"], [[2.0, "x"]], [object()]])
def test_non_numeric_exponents_raise_a_value_error(exponents):
    with pytest.raises(ValueError, match="exponents must be a number or a tensor of numbers"):
        LpNestedSymmetric([2], exponents)


@settings(max_examples=30, **PROPERTY)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.sampled_from([0, -2, 1.5, 2.0, True, "3", None]))
def test_isa_sizes_that_are_not_positive_integers_raise(sizes, bad):
    sizes = sizes + [bad]
    with pytest.raises(LpNestedTreeError, match="subspace sizes must be positive integers"):
        LpNestedSymmetric.isa(2.0, [2.0] * len(sizes), sizes)
