"""Property-based tests of N-VAE's DirichletClassPrior: random numbers of classes, concentrations, label shapes and
labels, checked against Dirichlet densities and posterior counts written out here with numpy/scipy."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import gammaln

from untwine.distributions import DirichletClassPrior

F64 = torch.float64
# derandomised so CI sees the same examples every run; no example database in the repository
PROPERTY = dict(deadline=None, derandomize=True, database=None)

label_shapes = st.lists(st.integers(0, 5), max_size=2).map(tuple)


@st.composite
def _labelled(draw, max_classes=8):
    """(num_classes, alpha, labels) with labels of a random shape, every one in [0, L)."""
    num_classes = draw(st.integers(2, max_classes))
    alpha = draw(st.floats(0.05, 20.0))
    shape = draw(label_shapes)
    labels = draw(st.lists(st.integers(0, num_classes - 1), min_size=math.prod(shape), max_size=math.prod(shape)))
    return num_classes, alpha, np.array(labels, dtype=np.int64).reshape(shape)


def _simplex_points(draw, num_classes, count):
    """Points inside the simplex (normalised positive weights; none at the boundary, where log pi is -inf)."""
    weights = draw(
        st.lists(st.lists(st.floats(0.01, 1.0), min_size=num_classes, max_size=num_classes), min_size=1, max_size=count)
    )
    w = np.asarray(weights)
    return w / w.sum(-1, keepdims=True)


def np_dirichlet_log_prob(concentration, pi):
    """log Dir(pi; a) = log Gamma(a_0) - sum_k log Gamma(a_k) + sum_k (a_k - 1) log pi_k."""
    a = np.asarray(concentration, dtype=np.float64)
    return gammaln(a.sum(-1)) - gammaln(a).sum(-1) + ((a - 1) * np.log(pi)).sum(-1)


@settings(max_examples=80, **PROPERTY)
@given(_labelled())
def test_conjugate_update_adds_one_count_per_label(case):
    """p(pi | y) = Dir(alpha 1 + c_y): each label's posterior adds a one-hot count, so the counts summed over a batch
    are the label histogram (the posterior of the whole batch, Dir(alpha 1 + counts))."""
    num_classes, alpha, labels = case
    prior = DirichletClassPrior(torch.tensor(alpha, dtype=F64), num_classes)
    post = prior.posterior(torch.from_numpy(labels))
    expected = alpha + np.eye(num_classes)[labels]
    assert post.batch_shape == labels.shape and post.event_shape == (num_classes,)
    np.testing.assert_array_equal(post.concentration.numpy(), expected)
    counts = (post.concentration - alpha).reshape(-1, num_classes).sum(0).numpy()
    np.testing.assert_allclose(counts, np.bincount(labels.reshape(-1), minlength=num_classes), atol=1e-9)


@settings(max_examples=60, **PROPERTY)
@given(_labelled(), st.data())
def test_prior_and_posterior_log_probs_are_finite_and_match_the_closed_form(case, data):
    num_classes, alpha, labels = case
    labels = labels.reshape(-1)[:3] if labels.size else np.array([0])
    pi = _simplex_points(data.draw, num_classes, 4)
    prior = DirichletClassPrior(torch.tensor(alpha, dtype=F64), num_classes)
    prior_lp = prior.log_prob(torch.from_numpy(pi))
    assert torch.isfinite(prior_lp).all()
    np.testing.assert_allclose(prior_lp.numpy(), np_dirichlet_log_prob(np.full(num_classes, alpha), pi), rtol=1e-10)
    np.testing.assert_allclose(
        prior_lp.numpy(), torch.distributions.Dirichlet(torch.full((num_classes,), alpha, dtype=F64)).log_prob(
            torch.from_numpy(pi)).numpy(), rtol=1e-12,
    )  # fmt: skip
    post = prior.posterior(torch.from_numpy(labels)[:, None])  # (labels, 1) against (points,): every pair
    post_lp = post.log_prob(torch.from_numpy(pi))
    assert post_lp.shape == (len(labels), len(pi)) and torch.isfinite(post_lp).all()
    expected = np_dirichlet_log_prob(alpha + np.eye(num_classes)[labels][:, None, :], pi[None])
    np.testing.assert_allclose(post_lp.numpy(), expected, rtol=1e-10, atol=1e-10)
    # Bayes' rule pointwise: log p(pi | y) = log p(pi) + log pi_y - log p(y), with p(y) = 1/L by symmetry
    bayes = prior_lp.numpy()[None] + np.log(pi[:, labels]).T + math.log(num_classes)
    np.testing.assert_allclose(post_lp.numpy(), bayes, rtol=1e-10, atol=1e-10)


@settings(max_examples=60, **PROPERTY)
@given(_labelled())
def test_log_marginal_is_minus_log_num_classes_for_every_label(case):
    """p(y) = E[pi_y] = alpha / (L alpha) under the symmetric prior."""
    num_classes, alpha, labels = case
    prior = DirichletClassPrior(torch.tensor(alpha, dtype=F64), num_classes)
    out = prior.log_marginal(torch.from_numpy(labels))
    assert out.shape == labels.shape
    np.testing.assert_allclose(out.numpy(), np.full(labels.shape, math.log(alpha / (num_classes * alpha))))


@settings(max_examples=40, **PROPERTY)
@given(_labelled(), st.lists(st.floats(0.05, 20.0), min_size=1, max_size=3))
def test_posterior_of_a_batched_prior_broadcasts_labels_against_the_alphas(case, alphas):
    num_classes, _, labels = case
    labels = labels.reshape(-1)[:1] if labels.size else np.array([num_classes - 1])
    prior = DirichletClassPrior(torch.tensor(alphas, dtype=F64), num_classes)
    post = prior.posterior(torch.from_numpy(np.repeat(labels, len(alphas))))
    expected = np.asarray(alphas)[:, None] + np.eye(num_classes)[labels[0]]
    np.testing.assert_array_equal(post.concentration.numpy(), expected)


# --- bad input ---------------------------------------------------------------------------------------


@settings(max_examples=40, **PROPERTY)
@given(_labelled(), st.integers(1, 3), st.booleans(), st.data())
def test_unlabelled_entries_have_no_conjugate_update_and_are_named(case, how_many, validate, data):
    """-1 marks an unlabelled image in N-VAE's data; the class prior's update is for labelled images only."""
    num_classes, alpha, labels = case
    labels = labels.reshape(-1).copy()
    labels = np.concatenate([labels, np.full(how_many, -1)])
    data.draw(st.randoms()).shuffle(labels)
    prior = DirichletClassPrior(torch.tensor(alpha, dtype=F64), num_classes, validate_args=validate)
    for method in (prior.posterior, prior.log_marginal):
        with pytest.raises(ValueError, match=r"-1 marks an unlabelled image, which has no conjugate update"):
            method(torch.from_numpy(labels))


@settings(max_examples=40, **PROPERTY)
@given(_labelled(), st.one_of(st.integers(-50, -2), st.integers(0, 40)), st.booleans())
def test_labels_out_of_range_raise_with_the_allowed_range(case, offset, validate):
    num_classes, alpha, labels = case
    bad = offset if offset < 0 else num_classes + offset
    labels = np.concatenate([labels.reshape(-1), [bad]])
    prior = DirichletClassPrior(alpha, num_classes, validate_args=validate)
    with pytest.raises(ValueError, match=rf"class labels must lie in \[0, {num_classes}\)"):
        prior.posterior(torch.from_numpy(labels))


@settings(max_examples=30, **PROPERTY)
@given(_labelled(), st.sampled_from([torch.float32, torch.float64, torch.bool, torch.complex64]))
def test_labels_of_a_non_integer_dtype_raise(case, dtype):
    num_classes, alpha, labels = case
    prior = DirichletClassPrior(alpha, num_classes)
    y = torch.from_numpy(np.asarray(labels % 2)).to(dtype)
    for method in (prior.posterior, prior.log_marginal):
        with pytest.raises(ValueError, match=f"class labels must be integers, got dtype {dtype}"):
            method(y)


@settings(max_examples=30, **PROPERTY)
@given(st.integers(2, 6), st.integers(2, 4), st.integers(1, 5).filter(lambda k: k != 1))
def test_labels_that_do_not_broadcast_with_a_batched_prior_raise(num_classes, batch, labels):
    prior = DirichletClassPrior(torch.ones(batch), num_classes)
    if labels == batch:
        labels += 1
    with pytest.raises(ValueError, match=rf"labels of shape \({labels},\) do not broadcast .* \({batch},\)"):
        prior.posterior(torch.zeros(labels, dtype=torch.long))


@settings(max_examples=30, **PROPERTY)
@given(st.integers(2, 8), st.sampled_from([0.0, -1.0, -1e-3, float("nan"), float("inf")]))
def test_non_positive_or_non_finite_alpha_raises_when_validating(num_classes, bad):
    with pytest.raises(ValueError, match=r"alpha \(the Dirichlet concentration\) must be positive and finite"):
        DirichletClassPrior(torch.tensor([1.0, bad]), num_classes, validate_args=True)


@settings(max_examples=30, **PROPERTY)
@given(_labelled(), st.integers(-2, 3).filter(lambda k: k != 0))
def test_log_prob_of_a_point_with_the_wrong_number_of_classes_raises(case, offset):
    num_classes, alpha, _ = case
    prior = DirichletClassPrior(alpha, num_classes, validate_args=True)
    size = num_classes + offset
    with pytest.raises(ValueError, match="event_shape"):
        prior.log_prob(torch.full((size,), 1.0 / max(size, 1)))


@pytest.mark.parametrize("labels", [["a", "b"], [object()]])
def test_labels_that_are_not_numbers_raise(labels):
    with pytest.raises(ValueError, match="class labels must be a tensor of integers"):
        DirichletClassPrior(1.0, 3).posterior(labels)
