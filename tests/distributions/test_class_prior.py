"""DirichletClassPrior (N-VAE's symmetric Dirichlet over class probabilities) against closed forms and Monte Carlo.

Every reference here is written independently of the module: Dirichlet densities with scipy / numpy, the
Dirichlet-Dirichlet KL with ``scipy.special.gammaln`` / ``digamma``, and Monte Carlo with numpy's own generator.
"""

import contextlib
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.distributions import Dirichlet
from pyro.infer import TraceMeanField_ELBO
from scipy import stats
from scipy.special import digamma, gammaln

from untwine.distributions import DirichletClassPrior

F64 = torch.float64


def f64(x):
    return torch.as_tensor(x, dtype=F64)


@contextlib.contextmanager
def seeded(seed):
    """A fixed torch seed for the block, without disturbing the global generator afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


# --- independent numpy references ---------------------------------------------------------------


def np_dirichlet_logpdf(x, conc):
    """log Dir(x; conc), broadcasting over leading axes, in numpy."""
    x, conc = np.asarray(x, dtype=np.float64), np.asarray(conc, dtype=np.float64)
    return gammaln(conc.sum(-1)) - gammaln(conc).sum(-1) + ((conc - 1.0) * np.log(x)).sum(-1)


def np_dirichlet_kl(a, b):
    """KL(Dir(a) || Dir(b)) in closed form, broadcasting over leading axes, in numpy."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    a0, b0 = a.sum(-1), b.sum(-1)
    return (
        gammaln(a0)
        - gammaln(a).sum(-1)
        - gammaln(b0)
        + gammaln(b).sum(-1)
        + ((a - b) * (digamma(a) - digamma(a0)[..., None])).sum(-1)
    )


def torch_dirichlet_kl(a, b):
    """The same closed form in torch (differentiable), written out term by term."""
    a0, b0 = a.sum(-1), b.sum(-1)
    return (
        torch.lgamma(a0)
        - torch.lgamma(a).sum(-1)
        - torch.lgamma(b0)
        + torch.lgamma(b).sum(-1)
        + ((a - b) * (torch.digamma(a) - torch.digamma(a0).unsqueeze(-1))).sum(-1)
    )


def np_posterior_concentration(alpha, labels, num_classes):
    """alpha * 1_L + one_hot(y), with alpha broadcast against the labels' shape."""
    labels = np.asarray(labels)
    return np.asarray(alpha, dtype=np.float64)[..., None] + np.eye(num_classes)[labels]


# --- 1. conjugacy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_posterior_density_is_prior_times_likelihood_over_evidence_pointwise(alpha, num_classes):
    rng = np.random.default_rng(0)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    points = rng.dirichlet(np.ones(num_classes), size=50)  # random points in the open simplex
    log_prior = stats.dirichlet.logpdf(points.T, alpha * np.ones(num_classes))
    log_evidence = np.log(alpha / (num_classes * alpha))  # p(y) = E[pi_y] = alpha / (L alpha)
    for y in range(num_classes):
        expected = log_prior + np.log(points[:, y]) - log_evidence  # Bayes: p(pi | y) = p(pi) pi_y / p(y)
        got = prior.posterior(torch.tensor(y)).log_prob(f64(points))
        assert got.shape == (50,)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("num_classes", [2, 3, 7])
def test_log_marginal_matches_monte_carlo_and_closed_form_of_log_expected_pi_y(alpha, num_classes):
    rng = np.random.default_rng(1)
    n = 200_000
    pis = rng.dirichlet(alpha * np.ones(num_classes), size=n)
    labels = torch.arange(num_classes)
    got = DirichletClassPrior(f64(alpha), num_classes).log_marginal(labels)
    assert got.shape == (num_classes,) and got.dtype == F64
    closed = math.log(alpha / (num_classes * alpha))
    np.testing.assert_allclose(got.numpy(), closed, rtol=0, atol=1e-12)
    for y in range(num_classes):
        mean = pis[:, y].mean()
        # delta method: sd(log mean) ~ sd(pi_y) / (sqrt(n) mean)
        se = pis[:, y].std() / (math.sqrt(n) * mean)
        assert abs(got[y].item() - math.log(mean)) < 5 * se, (y, got[y].item(), math.log(mean), se)


# --- 2. batched posterior -------------------------------------------------------------------------


@pytest.mark.parametrize("label_shape", [(6,), (4, 6)])
def test_posterior_batches_over_labels_with_one_hot_concentrations(label_shape):
    rng = np.random.default_rng(2)
    num_classes, alpha = 5, 0.7
    labels = rng.integers(0, num_classes, size=label_shape)
    post = DirichletClassPrior(f64(alpha), num_classes).posterior(torch.as_tensor(labels))
    assert post.batch_shape == label_shape and post.event_shape == (num_classes,)
    np.testing.assert_array_equal(post.concentration.numpy(), np_posterior_concentration(alpha, labels, num_classes))
    # exactly one coordinate raised by one, at the label
    assert np.all((post.concentration.numpy() > alpha).sum(-1) == 1)
    assert np.all(post.concentration.numpy().argmax(-1) == labels)


@pytest.mark.parametrize("label_shape", [(6,), (4, 6)])
def test_posterior_with_batched_alpha_broadcasts_alpha_against_labels(label_shape):
    rng = np.random.default_rng(3)
    num_classes = 4
    alpha = rng.uniform(0.2, 3.0, size=6)
    labels = rng.integers(0, num_classes, size=label_shape)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    assert prior.batch_shape == (6,)
    post = prior.posterior(torch.as_tensor(labels))
    assert post.batch_shape == label_shape
    np.testing.assert_array_equal(post.concentration.numpy(), np_posterior_concentration(alpha, labels, num_classes))
    np.testing.assert_allclose(prior.log_marginal(torch.as_tensor(labels)).numpy(), -np.log(num_classes), atol=1e-12)


def test_posterior_accepts_every_integer_label_dtype():
    """The docstring promises integer labels and ``_check_labels`` lets every integer dtype through."""
    num_classes, alpha = 4, 0.5
    labels = np.array([0, 3, 1, 2, 3])
    prior = DirichletClassPrior(f64(alpha), num_classes)
    expected = np_posterior_concentration(alpha, labels, num_classes)
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        y = torch.as_tensor(labels).to(dtype)
        np.testing.assert_array_equal(prior.posterior(y).concentration.numpy(), expected, err_msg=str(dtype))
        np.testing.assert_allclose(prior.log_marginal(y).numpy(), -np.log(num_classes), atol=1e-12)


# --- 3. KL divergences ----------------------------------------------------------------------------


def test_kl_to_and_from_posterior_dispatches_to_dirichlet_registry():
    prior = DirichletClassPrior(f64(0.5), 3)
    post = prior.posterior(torch.tensor([0, 2]))
    q = Dirichlet(f64(np.ones((2, 3))))
    kl_fn = torch.distributions.kl._kl_dirichlet_dirichlet
    assert torch.distributions.kl._dispatch_kl(type(q), type(post)) is kl_fn
    assert torch.distributions.kl._dispatch_kl(type(post), type(prior)) is kl_fn
    assert torch.distributions.kl._dispatch_kl(type(q), type(prior)) is kl_fn


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_kl_guide_to_posterior_matches_closed_form_and_monte_carlo(alpha):
    rng = np.random.default_rng(4)
    num_classes, batch, n = 4, 5, 200_000
    labels = rng.integers(0, num_classes, size=batch)
    a = rng.uniform(0.5, 4.0, size=(batch, num_classes))
    b = np_posterior_concentration(alpha, labels, num_classes)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    got = torch.distributions.kl_divergence(Dirichlet(f64(a)), prior.posterior(torch.as_tensor(labels)))
    assert got.shape == (batch,)
    np.testing.assert_allclose(got.numpy(), np_dirichlet_kl(a, b), rtol=1e-10, atol=1e-12)
    for i in range(batch):
        x = rng.dirichlet(a[i], size=n)
        ratio = np_dirichlet_logpdf(x, a[i]) - np_dirichlet_logpdf(x, b[i])
        se = ratio.std() / math.sqrt(n)
        assert abs(got[i].item() - ratio.mean()) < 5 * se, (i, got[i].item(), ratio.mean(), se)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_kl_posterior_to_prior_matches_closed_form_and_monte_carlo(alpha):
    rng = np.random.default_rng(5)
    num_classes, n = 3, 200_000
    labels = np.arange(num_classes)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    got = torch.distributions.kl_divergence(prior.posterior(torch.as_tensor(labels)), prior)
    b = np_posterior_concentration(alpha, labels, num_classes)
    p = alpha * np.ones(num_classes)
    assert got.shape == (num_classes,)
    np.testing.assert_allclose(got.numpy(), np_dirichlet_kl(b, p), rtol=1e-10, atol=1e-12)
    # with a symmetric prior, the KL is the same for every label
    np.testing.assert_allclose(got.numpy(), got[0].item(), rtol=1e-12)
    for y in labels:
        x = rng.dirichlet(b[y], size=n)
        ratio = np_dirichlet_logpdf(x, b[y]) - np_dirichlet_logpdf(x, p)
        se = ratio.std() / math.sqrt(n)
        assert abs(got[y].item() - ratio.mean()) < 5 * se, (y, got[y].item(), ratio.mean(), se)


def test_trace_mean_field_elbo_uses_analytic_kl_to_posterior_with_matching_gradients():
    rng = np.random.default_rng(6)
    num_classes, batch, alpha = 4, 7, 0.8
    labels = rng.integers(0, num_classes, size=batch)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    y = torch.as_tensor(labels)
    conc = f64(rng.uniform(0.3, 3.0, size=(batch, num_classes))).requires_grad_()

    def model():
        with pyro.plate("data", batch):
            pyro.sample("pi", prior.posterior(y))

    def guide():
        with pyro.plate("data", batch):
            pyro.sample("pi", Dirichlet(conc))

    losses = []
    for seed in (0, 1):
        with seeded(seed):
            losses.append(TraceMeanField_ELBO().differentiable_loss(model, guide))
    assert losses[0].item() == losses[1].item()  # no Monte Carlo noise
    b = np_posterior_concentration(alpha, labels, num_classes)
    closed = np_dirichlet_kl(conc.detach().numpy(), b).sum()
    np.testing.assert_allclose(losses[0].item(), closed, rtol=1e-12)

    (got_grad,) = torch.autograd.grad(losses[0], conc)
    (ref_grad,) = torch.autograd.grad(torch_dirichlet_kl(conc, f64(b)).sum(), conc)
    np.testing.assert_allclose(got_grad.numpy(), ref_grad.numpy(), rtol=1e-10, atol=1e-12)
    # and the reference gradient is itself right: central finite differences of the numpy closed form
    a0 = conc.detach().numpy()
    eps = 1e-6
    fd = np.zeros_like(a0)
    for idx in np.ndindex(a0.shape):
        up, down = a0.copy(), a0.copy()
        up[idx] += eps
        down[idx] -= eps
        fd[idx] = (np_dirichlet_kl(up, b).sum() - np_dirichlet_kl(down, b).sum()) / (2 * eps)
    np.testing.assert_allclose(got_grad.numpy(), fd, rtol=1e-6, atol=1e-7)


# --- 4. the identity behind N-VAE's eq. 3 ----------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
@pytest.mark.parametrize("num_classes", [2, 10])
def test_expected_log_likelihood_minus_prior_kl_equals_minus_posterior_kl_plus_log_marginal(alpha, num_classes):
    rng = np.random.default_rng(7)
    batch = 8
    labels = rng.integers(0, num_classes, size=batch)
    a = rng.uniform(0.1, 6.0, size=(batch, num_classes))
    prior = DirichletClassPrior(f64(alpha), num_classes)
    q = Dirichlet(f64(a))
    y = torch.as_tensor(labels)
    expected_log_lik = digamma(a[np.arange(batch), labels]) - digamma(a.sum(-1))  # E_q[log pi_y]
    lhs = expected_log_lik - torch.distributions.kl_divergence(q, prior).numpy()
    rhs = -torch.distributions.kl_divergence(q, prior.posterior(y)) + prior.log_marginal(y)
    np.testing.assert_allclose(rhs.numpy(), lhs, rtol=1e-11, atol=1e-11)


# --- 5. sampling ----------------------------------------------------------------------------------


def test_samples_lie_on_simplex_with_dirichlet_mean_and_variance():
    alpha = np.array([0.3, 1.0, 4.0])
    num_classes, n = 4, 200_000
    prior = DirichletClassPrior(f64(alpha), num_classes)
    with seeded(8):
        x = prior.sample((n,)).numpy()
    assert x.shape == (n, 3, num_classes)
    assert np.all(x >= 0) and np.all(x <= 1)
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-12)
    for i, a in enumerate(alpha):
        conc = a * np.ones(num_classes)
        mean, var = stats.dirichlet.mean(conc), stats.dirichlet.var(conc)
        np.testing.assert_allclose(var, (num_classes - 1) / (num_classes**2 * (num_classes * a + 1)), rtol=1e-12)
        xi = x[:, i]
        z_mean = (xi.mean(0) - mean) / np.sqrt(var / n)
        centred = xi - xi.mean(0)
        se_var = np.sqrt(((centred**4).mean(0) - centred.var(0) ** 2) / n)
        z_var = (centred.var(0) - var) / se_var
        assert np.all(np.abs(z_mean) < 5), (a, z_mean)
        assert np.all(np.abs(z_var) < 5), (a, z_var)


def test_rsample_is_reparameterised_with_unbiased_gradient_in_alpha():
    num_classes, alpha, n, reps = 3, 0.9, 20_000, 40
    prior = DirichletClassPrior(f64(np.full(reps, alpha)).requires_grad_(), num_classes)
    assert prior.has_rsample
    with seeded(9):
        x = prior.rsample((n,))
    assert x.requires_grad
    # E[pi_0^2] = (alpha + 1) / (L (L alpha + 1)), so d/dalpha = (1 - L) / (L (L alpha + 1)^2)
    (grad,) = torch.autograd.grad(x[..., 0].pow(2).mean(0).sum(), prior.alpha)
    grad = grad.numpy()  # `reps` independent gradient estimates
    assert np.all(np.isfinite(grad))
    exact = (1 - num_classes) / (num_classes * (num_classes * alpha + 1) ** 2)
    se = grad.std(ddof=1) / math.sqrt(reps)
    assert abs(grad.mean() - exact) < 5 * se, (grad.mean(), exact, se)
    assert abs(grad.mean() - exact) < 0.05 * abs(exact)


# --- 6. API ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha_shape", [(), (3,)])
def test_expand_keeps_alpha_and_num_classes(alpha_shape):
    num_classes = 5
    alpha = np.linspace(0.5, 2.0, 3)[: (3 if alpha_shape else 1)].reshape(alpha_shape)
    prior = DirichletClassPrior(f64(alpha), num_classes)
    big = prior.expand((2, 3))
    assert isinstance(big, DirichletClassPrior)
    assert big.num_classes == num_classes
    assert big.batch_shape == (2, 3) and big.event_shape == (num_classes,)
    np.testing.assert_array_equal(big.alpha.numpy(), np.broadcast_to(alpha, (2, 3)))
    np.testing.assert_array_equal(big.concentration.numpy(), np.broadcast_to(alpha[..., None], (2, 3, num_classes)))
    labels = np.array([[0, 1, 4], [3, 2, 0]])
    post = big.posterior(torch.as_tensor(labels))
    assert post.batch_shape == (2, 3)
    np.testing.assert_array_equal(
        post.concentration.numpy(), np_posterior_concentration(np.broadcast_to(alpha, (2, 3)), labels, num_classes)
    )
    x = np.full((2, 3, num_classes), 1.0 / num_classes)
    expected = np_dirichlet_logpdf(x, np.broadcast_to(alpha[..., None], (2, 3, num_classes)))
    np.testing.assert_allclose(big.log_prob(f64(x)).numpy(), expected, rtol=1e-12)
    with seeded(10):
        assert big.sample((7,)).shape == (7, 2, 3, num_classes)


@pytest.mark.parametrize("num_classes", [2, 3, 10])
@pytest.mark.parametrize("alpha_shape", [(), (4,), (2, 3)])
def test_event_shape_is_num_classes_and_batch_shape_is_alphas(num_classes, alpha_shape):
    prior = DirichletClassPrior(torch.full(alpha_shape, 0.5, dtype=F64), num_classes)
    assert prior.event_shape == (num_classes,)
    assert prior.batch_shape == alpha_shape
    assert prior.concentration.shape == alpha_shape + (num_classes,)
    np.testing.assert_array_equal(prior.concentration.numpy(), 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_follows_alpha(dtype):
    prior = DirichletClassPrior(torch.tensor(0.5, dtype=dtype), 3)
    y = torch.tensor([0, 2])
    assert prior.concentration.dtype == dtype
    assert prior.alpha.dtype == dtype
    with seeded(11):
        assert prior.sample((4,)).dtype == dtype
    assert prior.log_prob(torch.full((3,), 1 / 3, dtype=dtype)).dtype == dtype
    assert prior.posterior(y).concentration.dtype == dtype
    assert prior.log_marginal(y).dtype == dtype


def test_python_float_and_integer_alpha_use_default_float_dtype():
    for alpha in (0.5, 2, torch.tensor(2)):
        prior = DirichletClassPrior(alpha, 3)
        assert prior.concentration.dtype == torch.get_default_dtype()
        np.testing.assert_array_equal(prior.concentration.numpy(), float(alpha))


@pytest.mark.parametrize("num_classes", [2, 6])
def test_log_prob_gradient_in_zero_dim_alpha_matches_closed_form_and_finite_differences(num_classes):
    rng = np.random.default_rng(12)
    alpha = 0.7
    x = rng.dirichlet(np.ones(num_classes), size=5)
    a = f64(alpha).requires_grad_()
    prior = DirichletClassPrior(a, num_classes)
    assert prior.batch_shape == ()
    lp = prior.log_prob(f64(x))
    np.testing.assert_allclose(
        lp.detach().numpy(), stats.dirichlet.logpdf(x.T, np.full(num_classes, alpha)), rtol=1e-12
    )
    (grad,) = torch.autograd.grad(lp.sum(), a)
    # d/dalpha [lgamma(L alpha) - L lgamma(alpha) + (alpha - 1) sum_k log x_k]
    closed = (num_classes * digamma(num_classes * alpha) - num_classes * digamma(alpha) + np.log(x).sum(-1)).sum()
    eps = 1e-6

    def total(al):
        return stats.dirichlet.logpdf(x.T, np.full(num_classes, al)).sum()

    fd = (total(alpha + eps) - total(alpha - eps)) / (2 * eps)
    np.testing.assert_allclose(grad.item(), closed, rtol=1e-10)
    np.testing.assert_allclose(grad.item(), fd, rtol=1e-6)


# --- 7. errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_fewer_than_two_classes_raise(num_classes):
    with pytest.raises(ValueError, match="at least 2"):
        DirichletClassPrior(1.0, num_classes)


@pytest.mark.parametrize("num_classes", [3.0, "3", True, None])
def test_non_integer_num_classes_raise(num_classes):
    with pytest.raises(ValueError, match="integer"):
        DirichletClassPrior(1.0, num_classes)


@pytest.mark.parametrize("validate_args", [None, False, True])
@pytest.mark.parametrize("bad", [[-1], [0, 4], [2, -5, 1], [7]])
def test_labels_outside_range_raise_with_allowed_range(bad, validate_args):
    prior = DirichletClassPrior(f64(0.5), 4, validate_args=validate_args)
    y = torch.tensor(bad)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        prior.posterior(y)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        prior.log_marginal(y)


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0]), torch.tensor([1.0], dtype=F64), torch.tensor([True])])
def test_float_and_bool_labels_raise(labels):
    prior = DirichletClassPrior(f64(0.5), 3)
    with pytest.raises(ValueError, match="integer"):
        prior.posterior(labels)
    with pytest.raises(ValueError, match="integer"):
        prior.log_marginal(labels)


@pytest.mark.parametrize("alpha", [0.0, -1.0, [1.0, -0.5, 2.0], [0.3, 0.0]])
def test_non_positive_alpha_raises_when_validating(alpha):
    with pytest.raises(ValueError, match="concentration"):
        DirichletClassPrior(f64(alpha), 3, validate_args=True)


# --- 8. CUDA --------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_posterior_matches_cpu():
    rng = np.random.default_rng(13)
    num_classes = 5
    alpha = rng.uniform(0.2, 2.0, size=6)
    labels = torch.as_tensor(rng.integers(0, num_classes, size=(3, 6)))
    cpu = DirichletClassPrior(f64(alpha), num_classes)
    gpu = DirichletClassPrior(f64(alpha).cuda(), num_classes)
    post = gpu.posterior(labels.cuda())
    assert post.concentration.device.type == "cuda"
    torch.testing.assert_close(post.concentration.cpu(), cpu.posterior(labels).concentration, rtol=0, atol=0)
    lm = gpu.log_marginal(labels.cuda())
    assert lm.device.type == "cuda"
    torch.testing.assert_close(lm.cpu(), cpu.log_marginal(labels))
    q = f64(rng.uniform(0.5, 3.0, size=(3, 6, num_classes)))
    kl_gpu = torch.distributions.kl_divergence(Dirichlet(q.cuda()), post)
    torch.testing.assert_close(kl_gpu.cpu(), torch.distributions.kl_divergence(Dirichlet(q), cpu.posterior(labels)))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        DirichletClassPrior(f64(0.5).cuda(), num_classes, validate_args=True).posterior(torch.tensor([5]).cuda())
