"""Generic contract of every custom distribution, run over each case registered in ``conftest.FIXTURES``.

The Pyro idea (``tests/distributions/test_distributions.py``): one list of behaviours every ``TorchDistribution``
must have (shapes, broadcasting, ``expand``, support, sampler against density, moments, gradients), so a new
distribution is tested by registering it. The distribution-specific mathematics stays in the other test files.

Tolerances. A Monte Carlo check compares an average with an independent value (a closed form or scipy, from the
registry) and allows ``Z = 5`` standard errors, the standard error estimated from the same samples. By the central
limit theorem a correct implementation fails one such comparison with probability 2 Phi(-5) ~ 5.7e-7; exact tests
(Kolmogorov-Smirnov) use the same rate as their p-value threshold ``P_MIN``. This file makes a few hundred such
comparisons, so any choice of seeds trips one with probability below 1e-3; the seeds are fixed, so a run is
deterministic. Sample sizes (20000-40000) put the detectable error at a few percent of a variance and at a 5% change
of any one parameter of the sampler.

Sampler against density. Pyro's nearest-neighbour ``auto_goodness_of_fit`` is not used for vectors: its p-values are
not uniform under a correct sampler (mutual nearest neighbours share a distance, so its binned statistic is
overdispersed; for a 2-D standard normal with 20000 samples 43% of seeds give p < 0.01, and torch's own Dirichlet
fails Pyro's 5e-4 threshold for many concentrations). The calibrated checks used instead are Stein's identity per
coordinate (the shape of ``log_prob``), the mean of ``log_prob`` against an independent entropy (its normaliser), and
Kolmogorov-Smirnov tests of 1-D statistics with exact laws.
"""

import contextlib
import math

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.distributions import TorchDistribution
from scipy import stats
from torch.distributions import biject_to

F64 = torch.float64
Z = 5.0  # standard errors allowed in a Monte Carlo comparison (see the module docstring)
P_MIN = math.erfc(Z / math.sqrt(2))  # the same false-alarm rate, 2 Phi(-5) ~ 5.7e-7, for exact tests' p-values
SAMPLE_SHAPES = [(), (5,), (2, 3)]


@contextlib.contextmanager
def seeded(seed):
    """A fixed torch seed for the block, without disturbing the global generator afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def expand(d, batch_shape, how):
    """The class's own ``expand``, or Pyro's generic ``ExpandedDistribution`` wrapper (which must agree with it)."""
    return d.expand(batch_shape) if how == "own" else TorchDistribution.expand(d, batch_shape)


def assert_same_log_prob_per_batch_element(small, large):
    """Pyro's ``check_sample_shapes``: an expanded distribution scores every batch element as the original does."""
    with seeded(0):
        x = small.sample()
        y = large.sample()
    torch.testing.assert_close(small.log_prob(x).expand(large.batch_shape), large.log_prob(x))
    torch.testing.assert_close(small.log_prob(y), large.log_prob(y))


# --- declared structure ---------------------------------------------------------------------------------------------


def test_batch_event_shapes_support_and_flags_are_as_declared(dist_case):
    d = dist_case.make()
    assert isinstance(d, dist_case.dist_class)
    assert d.batch_shape == dist_case.batch_shape and d.event_shape == dist_case.event_shape
    assert d.support is dist_case.support
    assert d.support.event_dim == d.event_dim == len(dist_case.event_shape)
    assert not d.support.is_discrete and not d.has_enumerate_support
    assert d.has_rsample is dist_case.has_rsample
    assert d.mean.shape == d.variance.shape == d.batch_shape + d.event_shape


def test_rsample_is_available_exactly_when_has_rsample(dist_case):
    d = dist_case.make()
    with seeded(1):
        if dist_case.has_rsample:
            assert d.rsample((2,)).shape == (2,) + d.batch_shape + d.event_shape
        else:
            with pytest.raises(NotImplementedError):
                d.rsample((2,))


# --- sample and log_prob shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
def test_sample_shape_is_sample_shape_plus_batch_shape_plus_event_shape(dist_case, sample_shape):
    d = dist_case.make()
    with seeded(2):
        x = d.sample(torch.Size(sample_shape))
    assert x.shape == torch.Size(sample_shape) + d.batch_shape + d.event_shape == d.shape(torch.Size(sample_shape))
    assert x.dtype == F64 and torch.isfinite(x).all()


@pytest.mark.parametrize("sample_shape", SAMPLE_SHAPES)
def test_log_prob_of_samples_has_sample_shape_plus_batch_shape_and_is_finite(dist_case, sample_shape):
    d = dist_case.make()
    with seeded(3):
        x = d.sample(torch.Size(sample_shape))
    log_p = d.log_prob(x)
    assert log_p.shape == torch.Size(sample_shape) + d.batch_shape
    assert log_p.dtype == F64 and torch.isfinite(log_p).all()


def test_log_prob_broadcasts_values_with_extra_leading_dims_and_singleton_batch_dims(dist_case):
    """A value with extra leading dims, with size-1 batch dims, or with no batch dims at all is scored as if it were
    expanded to ``batch_shape``, element by element."""
    d = dist_case.make()
    batch, event = d.batch_shape, d.event_shape
    with seeded(4):
        x = d.sample((3,))
    full = d.log_prob(x)
    torch.testing.assert_close(d.log_prob(x[:, None, None]), full[:, None, None])
    single = x[0].reshape((-1,) + event)[0]  # one event, no batch dims
    assert d.log_prob(single).shape == batch
    torch.testing.assert_close(d.log_prob(single), d.log_prob(single.expand(batch + event)))
    ones = x.reshape((3, -1) + event)[:, 0].reshape((3, 1) + (1,) * len(batch) + event)  # size-1 batch dims
    assert d.log_prob(ones).shape == (3, 1) + batch
    torch.testing.assert_close(d.log_prob(ones), d.log_prob(ones.expand((3, 1) + batch + event)))


@pytest.mark.parametrize("validate_args", [True, False])
def test_log_prob_rejects_a_value_of_the_wrong_event_size(dist_case, validate_args):
    """Also without validation (training): a wrong event size must raise, not broadcast into a wrong number."""
    d = dist_case.make(validate_args=validate_args)
    (size,) = d.event_shape
    for wrong in (size - 1, size + 1):
        if wrong < 1:
            continue
        with pytest.raises((ValueError, RuntimeError)):
            d.log_prob(dist_case.point_inside(wrong).expand(d.batch_shape + (wrong,)))


def test_log_prob_rejects_a_value_that_does_not_broadcast_with_the_batch_shape(dist_case):
    d = dist_case.make()
    if not d.batch_shape:
        pytest.skip("every value of the right event size broadcasts with an empty batch shape")
    shape = (d.batch_shape[0] + 1,) + d.batch_shape[1:] + d.event_shape
    with pytest.raises((ValueError, RuntimeError)):
        d.log_prob(dist_case.point_inside(d.event_shape[0]).expand(shape))


def test_log_prob_of_a_value_outside_the_support_raises_when_validating(dist_case):
    d = dist_case.make(validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(dist_case.point_outside())


def test_support_check_holds_for_samples_with_sample_and_batch_shape(dist_case):
    d = dist_case.make()
    with seeded(5):
        x = d.sample((200,))
    ok = d.support.check(x)
    assert ok.shape == (200,) + d.batch_shape
    assert ok.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_log_prob_and_moments_keep_the_parameter_dtype(dist_case, dtype):
    d = dist_case.make(dtype)
    with seeded(6):
        x = d.sample((50,))
    log_p = d.log_prob(x)
    assert x.dtype == log_p.dtype == d.mean.dtype == d.variance.dtype == dtype
    assert torch.isfinite(log_p).all()


# --- expand ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["own", "generic"])
@pytest.mark.parametrize("new_dims", [(2,), (2, 3)])
def test_expand_to_new_leading_batch_dims_keeps_each_batch_elements_log_prob(dist_case, how, new_dims):
    small = dist_case.make(validate_args=True)
    large = expand(small, torch.Size(new_dims) + small.batch_shape, how)
    assert large.batch_shape == new_dims + small.batch_shape and large.event_shape == small.event_shape
    if how == "own":
        assert type(large) is type(small) and large._validate_args
    with seeded(7):
        assert large.sample((4,)).shape == (4,) + new_dims + small.batch_shape + small.event_shape
    assert_same_log_prob_per_batch_element(small, large)
    torch.testing.assert_close(large.mean, small.mean.expand(large.batch_shape + large.event_shape))
    torch.testing.assert_close(large.variance, small.variance.expand(large.batch_shape + large.event_shape))


def test_expand_by_prepends_the_sample_shape_to_the_batch_shape(dist_case):
    small = dist_case.make()
    large = small.expand_by((2, 3))
    assert type(large) is type(small) and large.batch_shape == (2, 3) + small.batch_shape
    assert_same_log_prob_per_batch_element(small, large)


@pytest.mark.parametrize("how", ["own", "generic"])
def test_expand_grows_existing_singleton_batch_dims(dist_case, how):
    small = dist_case.make()
    singletons = [i for i, size in enumerate(small.batch_shape) if size == 1]
    if not singletons:
        pytest.skip("this case has no size-1 batch dim to grow")
    grown = list(small.batch_shape)
    for i in singletons:
        grown[i] = 5
    large = expand(small, torch.Size(grown), how)
    assert large.batch_shape == tuple(grown)
    assert_same_log_prob_per_batch_element(small, large)


@pytest.mark.parametrize("how", ["own", "generic"])
@pytest.mark.parametrize("shapes", [[(2, 1), (2, 3)], [(2, 1, 1), (2, 1, 3), (2, 5, 3)]])
def test_subsequent_expands_compose(dist_case, how, shapes):
    """Expanding an expanded distribution again (growing the singleton dims the first expand added) works."""
    d = dist_case.make()
    batch = d.batch_shape
    for shape in shapes:
        bigger = expand(d, torch.Size(shape) + batch, how)
        assert bigger.batch_shape == shape + batch
        assert_same_log_prob_per_batch_element(d, bigger)
        d = bigger


@pytest.mark.parametrize("how", ["own", "generic"])
@pytest.mark.parametrize("initial, proposed", [((2, 1), (4, 3)), ((2, 4), (2, 2, 1)), ((1, 2, 1), (2, 1))])
def test_expand_to_an_incompatible_batch_shape_raises(dist_case, how, initial, proposed):
    """Pyro's ``test_expand_error``: a non-singleton dim cannot change size and dims cannot be dropped."""
    small = dist_case.make()
    large = expand(small, torch.Size(initial) + small.batch_shape, how)
    with pytest.raises((ValueError, RuntimeError)):
        large.expand(torch.Size(proposed) + small.batch_shape)


def test_pyro_plate_broadcasts_the_distribution_and_scores_each_datum(dist_case):
    """Inside ``pyro.plate`` a site expands the distribution (through ``expand``) over a new batch dim."""
    d = dist_case.make()
    batch, event = d.batch_shape, d.event_shape
    with seeded(8):
        observed = d.sample((7,))

    def model():
        with pyro.plate("data", 7, dim=-1 - len(batch)):
            pyro.sample("latent", d)
            pyro.sample("observed", d, obs=observed)

    with seeded(9):
        trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    latent, obs = trace.nodes["latent"], trace.nodes["observed"]
    assert latent["value"].shape == (7,) + batch + event and latent["fn"].batch_shape == (7,) + batch
    assert latent["log_prob"].shape == obs["log_prob"].shape == (7,) + batch
    torch.testing.assert_close(latent["log_prob"], d.log_prob(latent["value"]))
    torch.testing.assert_close(obs["log_prob"], d.log_prob(observed))


# --- independent references -----------------------------------------------------------------------------------------


def test_log_prob_matches_an_independent_density(dist_case):
    """Pyro's ``test_batch_log_prob``: log_prob at samples equals the closed form written in the registry."""
    d = dist_case.make()
    with seeded(10):
        x = d.sample((20,))
    expected = dist_case.expected_reference().log_prob(x.numpy())
    np.testing.assert_allclose(d.log_prob(x).numpy(), expected, rtol=1e-10, atol=1e-10)


def test_mean_and_variance_equal_an_independent_closed_form(dist_case):
    d = dist_case.make()
    ref = dist_case.expected_reference()
    np.testing.assert_allclose(d.mean.numpy(), ref.mean, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d.variance.numpy(), ref.variance, rtol=1e-10)


def test_entropy_has_batch_shape_and_equals_an_independent_closed_form(dist_case):
    d = dist_case.make()
    if not dist_case.has_entropy:
        with pytest.raises(NotImplementedError):
            d.entropy()
        pytest.skip(f"{dist_case.dist_class.__name__} does not implement entropy()")
    entropy = d.entropy()
    assert entropy.shape == d.batch_shape
    np.testing.assert_allclose(entropy.numpy(), dist_case.expected_reference().entropy, rtol=1e-10)


# --- Monte Carlo: the sampler against the density and the moments ------------------------------------------------


def test_sample_mean_and_variance_match_the_distributions_mean_and_variance(dist_case):
    """Per coordinate: |sample mean - mean| < Z sqrt(var / N) and |sample var - variance| < Z sqrt((m4 - var^2) / N)
    (the delta-method standard error of a sample variance, m4 the sample's fourth central moment). ``mean`` and
    ``variance`` are themselves checked against closed forms above; with N = 40000 this resolves a relative variance
    error of a few percent."""
    d = dist_case.make()
    n = 40_000
    with seeded(11):
        x = d.sample((n,)).numpy()
    mean, variance = d.mean.numpy(), d.variance.numpy()
    centred = x - x.mean(0)
    sample_var = (centred**2).mean(0)
    se_mean = np.sqrt(sample_var / n)
    se_var = np.sqrt(((centred**4).mean(0) - sample_var**2) / n)
    z_mean = (x.mean(0) - mean) / se_mean
    z_var = (sample_var - variance) / se_var
    assert np.abs(z_mean).max() < Z, z_mean
    assert np.abs(z_var).max() < Z, z_var


def test_samples_satisfy_steins_identity_with_the_score_of_log_prob(dist_case):
    r"""Sampler against density in any dimension. In the unconstrained coordinates :math:`y = T^{-1}(x)`, with
    :math:`T` = ``biject_to(support)`` (the identity on a real vector, stick-breaking on the simplex), the density is
    :math:`p_Y(y) = p(T(y))\,|\det \partial T / \partial y|`, and integration by parts gives, for every coordinate
    :math:`j` and :math:`\phi \in \{y_j, \tanh y_j\}`,

    .. math:: \mathbb{E}_{p_Y}\big[\phi'(y_j) + \phi(y_j)\, \partial_j \log p_Y(y)\big] = 0 .

    The score comes from ``log_prob`` by autograd and the expectation from ``sample()``; each of the per-coordinate
    averages must lie within Z standard errors of zero. A 5% error in any one parameter of the sampler moves some
    average by about 6-9 standard errors at this N. The normaliser cancels from the score; the entropy test below
    checks it."""
    d = dist_case.make()
    n = 20_000
    with seeded(12):
        x = d.sample((n,))
    transform = biject_to(d.support)
    y = transform.inv(x).detach().requires_grad_()
    x_again = transform(y)
    log_p_y = d.log_prob(x_again) + transform.log_abs_det_jacobian(y, x_again)
    (score,) = torch.autograd.grad(log_p_y.sum(), y)
    assert torch.isfinite(score).all()
    y = y.detach()
    for name, phi, dphi in [("y", y, torch.ones_like(y)), ("tanh y", y.tanh(), 1 - y.tanh() ** 2)]:
        terms = (dphi + phi * score).numpy()
        z = terms.mean(0) / (terms.std(0) / math.sqrt(n))
        assert np.abs(z).max() < Z, (name, z)


def test_one_dimensional_projections_of_samples_follow_their_independent_laws(dist_case):
    """Kolmogorov-Smirnov test of 1-D statistics of the samples against their exact laws from the registry (a block's
    radial power, a class probability's Beta marginal); each p-value must exceed P_MIN."""
    d = dist_case.make()
    with seeded(17):
        x = d.sample((20_000,)).numpy()
    projections = dist_case.expected_reference().projections(x)
    assert projections
    for label, values, law in projections:
        result = stats.kstest(values, law.cdf)
        assert result.pvalue > P_MIN, (label, result)


def test_mean_log_prob_of_samples_is_minus_an_independent_entropy(dist_case):
    """E_p[log p(z)] = -H(p): the Monte Carlo average of log_prob over samples matches the closed-form entropy within
    Z standard errors (sd of log_prob / sqrt(N)). It ties sampler and density together in any dimension: samples too
    far out or too far in, or a normaliser off by a constant, move the average."""
    d = dist_case.make()
    n = 40_000
    with seeded(13):
        log_p = d.log_prob(d.sample((n,))).numpy()
    entropy = dist_case.expected_reference().entropy
    se = log_p.std(0) / math.sqrt(n)
    # log_prob is constant for a uniform density (alpha = 1): then se is 0 and the average must equal -H to rounding
    tolerance = Z * se + 1e-9 * (1 + np.abs(entropy))
    assert np.all(np.abs(-log_p.mean(0) - entropy) < tolerance), (log_p.mean(0), entropy, se)


# --- gradients ------------------------------------------------------------------------------------------------------


def test_sample_carries_no_gradient_even_when_parameters_require_grad(dist_case):
    d = dist_case.make(tensors=dist_case.tensors(requires_grad=True))
    with seeded(14):
        x = d.sample((3,))
    assert not x.requires_grad


def test_log_prob_gradients_in_every_parameter_match_finite_differences(dist_case):
    """``gradcheck`` (float64 central differences) of log_prob at a few samples, for all parameters at once."""
    with seeded(15):
        x = dist_case.make().sample((3,))
    names = list(dist_case.params)

    def log_prob(*tensors):
        return dist_case.make(tensors=dict(zip(names, tensors))).log_prob(x)

    inputs = tuple(dist_case.tensors(requires_grad=True).values())
    assert torch.autograd.gradcheck(log_prob, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_rsample_pathwise_gradient_of_the_second_moment_is_unbiased(dist_case):
    r"""For every parameter element :math:`\theta_i`, the reparameterised estimate of
    :math:`\partial_{\theta_i} \sum \mathbb{E}[z^2]` (summed over batch and event) averaged over R independent blocks
    matches central differences of the closed form :math:`\sum(\mathrm{Var} + \mathrm{mean}^2)` from the registry.
    With the standard error estimated from R blocks the statistic is Student-t with R - 1 degrees of freedom, so the
    bound is that distribution's quantile at the same false-alarm rate P_MIN (6.0 for R = 40) rather than Z."""
    if not dist_case.has_rsample:
        pytest.skip(f"{dist_case.dist_class.__name__} has no reparameterised sampler (has_rsample is False)")
    blocks, per_block = 40, 1000
    tensors = dist_case.tensors(requires_grad=True)
    d = dist_case.make(tensors=tensors)
    estimates = []
    with seeded(16):
        for _ in range(blocks):
            z = d.rsample((per_block,))
            grads = torch.autograd.grad(z.pow(2).mean(0).sum(), list(tensors.values()))
            estimates.append(torch.cat([g.reshape(-1) for g in grads]).numpy())
    estimates = np.stack(estimates)
    assert np.isfinite(estimates).all()

    def second_moment(params):
        ref = dist_case.reference(params, dist_case.static)
        return float((ref.variance + ref.mean**2).sum())

    base, h, exact = dist_case.numpy_params(), 1e-5, []
    for name, value in base.items():
        for idx in np.ndindex(value.shape):
            up, down = value.copy(), value.copy()
            up[idx] += h
            down[idx] -= h
            exact.append((second_moment({**base, name: up}) - second_moment({**base, name: down})) / (2 * h))
    se = estimates.std(0, ddof=1) / math.sqrt(blocks)
    t = (estimates.mean(0) - np.array(exact)) / se
    assert np.all(np.abs(t) < stats.t.isf(P_MIN / 2, blocks - 1)), (estimates.mean(0), exact, se)
