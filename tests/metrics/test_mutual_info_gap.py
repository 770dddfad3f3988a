"""MIG estimators on synthetic posteriors whose answer is known, and on hand-computed discrete examples."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

import untwine.metrics
from untwine.data import FactorDataset
from untwine.data.base import ImageDataset
from untwine.data.dsprites import DSprites
from untwine.metrics.mutual_info_gap import (
    DSPRITES_MIG_FACTORS,
    discrete_mig,
    discrete_mig_of,
    labelled_sampling_mig,
    labelled_sampling_mig_of,
    mig,
    sampling_mig,
    sampling_mig_of,
)
from untwine.pyro_models import VAE, VAEConfig

# A small factor grid shaped like dSprites': a constant factor, then 3, 6, 8 and 8 values (1,152 images).
SIZES = (1, 3, 6, 8, 8)
NAMES = ("const", "a", "b", "x", "y")
SCORED = ["a", "b", "x", "y"]


def grid():
    """Row-major factor classes (last factor fastest) and values scaled to [0, 1], without the constant factor."""
    classes = np.indices(SIZES).reshape(len(SIZES), -1).T
    values = classes[:, 1:] / (np.array(SIZES[1:]) - 1.0)
    return classes, torch.tensor(values, dtype=torch.float32)


def smig(loc, scale, **kw):
    return sampling_mig(loc, torch.full_like(loc, scale), SIZES, factor_names=NAMES, **kw)


# --- sampling MIG (Chen et al.) ------------------------------------------------------------------


def test_codes_equal_to_the_factors_give_mig_near_one():
    _, values = grid()
    got = smig(values, 0.01)
    assert got["factors"] == SCORED  # the constant factor is not scored by default
    assert got["mig"] > 0.95
    assert all(v > 0.95 for v in got["per_factor"].values())
    # each latent carries all of its factor's entropy and nothing of the others'
    mi = got["mutual_info"]
    assert mi.shape == (4, 4)
    np.testing.assert_allclose(np.diag(mi), 1.0, atol=0.03)
    assert np.abs(mi - np.diag(np.diag(mi))).max() < 0.03


def test_pure_noise_codes_give_mig_near_zero():
    loc = torch.randn(math.prod(SIZES), 4, generator=torch.Generator().manual_seed(0))
    got = smig(loc, 0.3)
    assert got["mig"] < 0.05


def test_rotating_two_factors_into_each_other_kills_their_gap_only():
    _, v = grid()
    rotated = v.clone()
    rotated[:, 2], rotated[:, 3] = (v[:, 2] + v[:, 3]) / math.sqrt(2), (v[:, 2] - v[:, 3]) / math.sqrt(2)
    got = smig(rotated, 0.01)
    assert got["per_factor"]["x"] < 0.05 and got["per_factor"]["y"] < 0.05
    assert got["per_factor"]["a"] > 0.95 and got["per_factor"]["b"] > 0.95


def test_grouping_a_rotated_pair_into_one_subspace_restores_its_gap():
    # ISA-VAE's "MIG grouped by subspaces": a rotation inside a subspace is invisible to the prior, so the metric
    # scores the pair jointly. The rotated x/y pair has no per-coordinate gap but a full gap as one group.
    _, v = grid()
    rotated = v.clone()
    rotated[:, 2], rotated[:, 3] = (v[:, 2] + v[:, 3]) / math.sqrt(2), (v[:, 2] - v[:, 3]) / math.sqrt(2)
    groups = [[0], [1], [2, 3]]
    got = smig(rotated, 0.01, groups=groups)
    assert got["mutual_info"].shape == (4, 3)
    # the pair carries all of x's and all of y's entropy; the other groups none of it
    np.testing.assert_allclose(got["mutual_info"][2:, 2], 1.0, atol=0.03)
    assert got["mutual_info"][2:, :2].max() < 0.03
    assert min(got["per_factor"].values()) > 0.95
    assert max(smig(rotated, 0.01)["per_factor"][k] for k in ("x", "y")) < 0.05


def test_singleton_groups_are_the_ordinary_mig_and_bad_groups_are_refused():
    _, v = grid()
    loc = v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2))
    plain = smig(loc, 0.1, seed=5)
    single = smig(loc, 0.1, seed=5, groups=[[0], [1], [2], [3]])
    np.testing.assert_allclose(single["mutual_info"], plain["mutual_info"], rtol=1e-5, atol=1e-7)
    for bad in ([[0, 4]], [[]], [[1, 1]], []):
        with pytest.raises(ValueError, match="group"):
            smig(loc, 0.1, groups=bad)


def test_duplicated_latents_give_mig_near_zero():
    _, v = grid()
    got = smig(v.repeat_interleave(2, dim=1), 0.01)
    assert got["mutual_info"].shape == (4, 8)
    assert max(got["per_factor"].values()) < 0.05


def test_wider_posteriors_lower_the_sampling_mig_monotonically():
    _, v = grid()
    migs = [smig(v, s)["mig"] for s in (0.02, 0.1, 0.3, 1.0)]
    assert migs[0] > 0.95 and migs[-1] < 0.1
    assert all(a > b + 0.05 for a, b in zip(migs, migs[1:])), migs


def test_sampling_mutual_information_matches_numerical_integration():
    # Factor 0 has two values; its code is a two-component Gaussian mixture, whose entropy we integrate numerically.
    # Factor 1 (3,000 values) is a nuisance the code ignores; latent 1 is pure noise.
    sizes, delta, sigma = (2, 3000), 1.0, 0.5
    classes = np.indices(sizes).reshape(2, -1).T
    loc = torch.zeros(6000, 2)
    loc[:, 0] = torch.tensor(classes[:, 0] * delta, dtype=torch.float32)
    scale = torch.full_like(loc, sigma)
    scale[:, 1] = 1.0

    def neg_plogp(t):
        p = 0.5 * stats.norm.pdf(t, 0, sigma) + 0.5 * stats.norm.pdf(t, delta, sigma)
        return -p * np.log(p)

    h_mix = integrate.quad(neg_plogp, -8, 9, limit=200)[0]
    exact = (h_mix - stats.norm(0, sigma).entropy()) / math.log(2)
    assert 0.3 < exact < 0.7  # a partly identifiable factor, far from both 0 and 1
    got = sampling_mig(loc, scale, sizes, factors=[0], num_samples=6000, seed=0)
    assert got["mutual_info"][0, 0] == pytest.approx(exact, abs=0.02)
    assert got["mutual_info"][0, 1] < 0.03
    assert got["mig"] == pytest.approx(got["mutual_info"][0, 0] - got["mutual_info"][0, 1])


def test_sampling_mig_is_seeded_and_checks_its_input():
    _, v = grid()
    a = smig(v, 0.2, num_samples=500, seed=1)
    b = smig(v, 0.2, num_samples=500, seed=1)
    c = smig(v, 0.2, num_samples=500, seed=2)
    np.testing.assert_array_equal(a["mutual_info"], b["mutual_info"])
    assert not np.array_equal(a["mutual_info"], c["mutual_info"])
    assert a["mig"] == pytest.approx(c["mig"], abs=0.05)
    with pytest.raises(ValueError, match="multiply"):
        sampling_mig(v[:-1], torch.ones_like(v[:-1]), SIZES)
    with pytest.raises(ValueError, match="single value"):
        smig(v, 0.1, factors=["const"])
    with pytest.raises(ValueError, match="unknown factor"):
        smig(v, 0.1, factors=["colour"])


def test_standard_error_matches_the_spread_over_seeds():
    # Codes are noisy mixtures of the factors, so every factor has a clear best latent and a runner-up whose mutual
    # information is well above 0 (neither clamped); each pool of codes is at least 20x the subset (24 codes), so the
    # finite-population correction the formula leaves out stays below 5%. A standard error off by 2x fails the band.
    sizes = (4, 5, 24, 24)
    classes = np.indices(sizes).reshape(len(sizes), -1).T
    values = torch.tensor(classes / (np.array(sizes) - 1.0), dtype=torch.float32)
    loc = values @ (torch.eye(4) + 0.4 * torch.roll(torch.eye(4), 1, 1)).T
    scale = torch.full_like(loc, 0.05)
    runs = [sampling_mig(loc, scale, sizes, num_samples=24, seed=seed) for seed in range(200)]
    ratio = np.mean([r["stderr"]["mig"] for r in runs]) / np.std([r["mig"] for r in runs], ddof=1)
    assert 0.75 < ratio < 1.33, ratio
    for name in runs[0]["per_factor"]:
        spread = np.std([r["per_factor"][name] for r in runs], ddof=1)
        ratio = np.mean([r["stderr"]["per_factor"][name] for r in runs]) / spread
        assert 0.75 < ratio < 1.33, (name, ratio)
    # every code used: the estimate is not subsampled and carries no standard error
    full = sampling_mig(loc, scale, sizes, num_samples=len(loc), seed=0, return_samples=True)
    assert full["stderr"] is None and full["samples"]["z"].shape == tuple(loc.shape)


class ReadOutModel(nn.Module):
    """'Encoder' that returns the factor values stored in the image as the code, with a fixed small scale."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        loc = x.flatten(1)[:, 1:] + self.dummy
        return loc, torch.full_like(loc, 0.01)


def toy_factor_dataset():
    classes, values = grid()
    images = torch.cat([torch.zeros(len(values), 1), values], 1).reshape(-1, 1, 1, 5)
    return FactorDataset(images, torch.as_tensor(classes), classes.astype(float), NAMES, SIZES, 1.0, "toy")


def test_model_level_mig_encodes_the_dataset_and_restores_training_mode():
    model, data = ReadOutModel().train(), toy_factor_dataset()
    got = sampling_mig_of(model, data, batch_size=100, num_samples=2000)
    assert model.training
    assert got["factors"] == SCORED and got["mig"] > 0.95
    only = sampling_mig_of(model, data, factors=["x"], num_samples=2000)
    assert only["factors"] == ["x"] and list(only["per_factor"]) == ["x"] and only["mutual_info"].shape == (1, 4)
    with pytest.raises(TypeError, match="FactorDataset"):
        sampling_mig_of(model, data.subset(torch.arange(10)))


def test_dsprites_scores_the_four_continuous_factors_by_default():
    subgrid = {"shape": [0, 2], "scale": [0, 5], "orientation": [0, 10], "posX": [0, 31], "posY": [3, 30]}
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_shape=(1, 64, 64), latent_dim=4))
    got = sampling_mig_of(vae, DSprites(subgrid=subgrid, cache=False), num_samples=32)
    assert got["factors"] == list(DSPRITES_MIG_FACTORS)
    assert set(got["per_factor"]) == set(DSPRITES_MIG_FACTORS) and got["mutual_info"].shape == (4, 4)
    # a factor the sub-grid fixes to one value carries no entropy and is dropped
    fixed = dict(subgrid, scale=[3])
    fixed_factors = sampling_mig_of(vae, DSprites(subgrid=fixed, cache=False), num_samples=16)["factors"]
    assert fixed_factors == ["orientation", "posX", "posY"]
    # disentanglement_lib's convention scores every varying factor, shape included
    assert discrete_mig_of(vae, DSprites(subgrid=subgrid, cache=False), num_samples=64)["factors"] == [
        "shape",
        *DSPRITES_MIG_FACTORS,
    ]


# --- discrete MIG (disentanglement_lib) ----------------------------------------------------------


def test_discrete_mig_matches_a_hand_computed_example():
    codes = np.array([[0.0, 0.0], [0.1, 1.0], [0.9, 1.0], [1.0, 1.0]])
    factors = np.array([[0, 0], [0, 1], [1, 2], [1, 2]])
    # With 2 bins per code: code 0 -> bins (1, 1, 2, 2), code 1 -> bins (1, 2, 2, 2).
    ln2 = math.log(2)
    h_v, h_w = ln2, 1.5 * ln2
    mi_v = [ln2, 0.25 * ln2 + 0.25 * math.log(2 / 3) + 0.5 * math.log(4 / 3)]
    mi_w = [ln2, 0.25 * math.log(4) + 0.75 * math.log(4 / 3)]
    want = np.array([[mi_v[0] / h_v, mi_v[1] / h_v], [mi_w[0] / h_w, mi_w[1] / h_w]])
    got = discrete_mig(codes, factors, num_bins=2, factor_names=["v", "w"])
    np.testing.assert_allclose(got["mutual_info"], want, rtol=1e-12)
    assert got["per_factor"]["v"] == pytest.approx(1 - 0.25 - 0.25 * math.log2(2 / 3) - 0.5 * math.log2(4 / 3))
    assert got["per_factor"]["w"] == pytest.approx(2 / 3 - want[1, 1])
    assert got["mig"] == pytest.approx((got["per_factor"]["v"] + got["per_factor"]["w"]) / 2)
    assert got["factors"] == ["v", "w"]


def test_discrete_mutual_information_matches_counting():
    rng = np.random.default_rng(0)
    n, bins = 500, 7
    codes = rng.normal(size=(n, 3)) * [1.0, 3.0, 0.2]
    factors = np.stack([rng.integers(0, 4, n), rng.integers(0, 5, n)], 1)
    codes[:, 0] += factors[:, 0]  # some real dependence
    got = discrete_mig(codes, factors, num_bins=bins)

    def plug_in_mi(a, b):
        joint = np.zeros((a.max() + 1, b.max() + 1))
        np.add.at(joint, (a, b), 1.0)
        joint /= joint.sum()
        outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
        nz = joint > 0
        return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())

    lo, hi = codes.min(0), codes.max(0)
    binned = np.minimum(np.floor((codes - lo) / (hi - lo) * bins).astype(int), bins - 1)
    want = np.array([[plug_in_mi(factors[:, k], binned[:, j]) for j in range(3)] for k in range(2)])
    want /= np.array([[plug_in_mi(factors[:, k], factors[:, k])] for k in range(2)])
    np.testing.assert_allclose(got["mutual_info"], want, rtol=1e-10)
    top = -np.sort(-want, 1)
    np.testing.assert_allclose(got["mig"], (top[:, 0] - top[:, 1]).mean(), rtol=1e-10)


def test_discrete_mig_sanity_cases():
    classes, v = grid()
    factors = classes[:, 1:]
    v = v.numpy().astype(np.float64)
    assert discrete_mig(v, factors)["mig"] == pytest.approx(1.0, abs=1e-12)
    noise = np.random.default_rng(0).normal(size=v.shape)
    assert discrete_mig(noise, factors)["mig"] < 0.05
    rotated = v.copy()
    rotated[:, 2], rotated[:, 3] = (v[:, 2] + v[:, 3]) / math.sqrt(2), (v[:, 2] - v[:, 3]) / math.sqrt(2)
    per = discrete_mig(rotated, factors, factor_names=SCORED)["per_factor"]
    assert per["x"] < 1e-9 and per["y"] < 1e-9 and per["a"] == pytest.approx(1.0) and per["b"] == pytest.approx(1.0)
    assert discrete_mig(np.repeat(v, 2, axis=1), factors)["mig"] < 1e-9
    rng = np.random.default_rng(1)
    migs = [discrete_mig(v + s * rng.normal(size=v.shape), factors)["mig"] for s in (0.0, 0.05, 0.2, 1.0)]
    assert all(a > b + 0.05 for a, b in zip(migs, migs[1:])), migs
    with pytest.raises(ValueError, match="single value"):
        discrete_mig(v, classes)  # the constant factor has zero entropy


def test_discrete_mig_of_uses_encoder_means():
    model, data = ReadOutModel().train(), toy_factor_dataset()
    got = discrete_mig_of(model, data, num_samples=None)
    assert model.training
    assert got["factors"] == SCORED and got["mig"] == pytest.approx(1.0, abs=1e-12)
    sampled = discrete_mig_of(model, data, num_samples=3000, seed=0)
    assert sampled["mig"] > 0.95


# --- names ---------------------------------------------------------------------------------------------------


def test_each_of_wrapper_encodes_and_calls_the_estimator_over_codes():
    model, data = ReadOutModel().train(), toy_factor_dataset()
    loc = data.images.flatten(1)[:, 1:]
    direct = sampling_mig(loc, torch.full_like(loc, 0.01), SIZES, SCORED, NAMES, num_samples=500, seed=3)
    wrapped = sampling_mig_of(model, data, num_samples=500, seed=3)
    np.testing.assert_allclose(wrapped["mutual_info"], direct["mutual_info"], rtol=1e-6, atol=1e-9)
    classes = data.factor_classes[:, 1:]
    direct = discrete_mig(loc, classes, factor_names=SCORED)
    np.testing.assert_array_equal(discrete_mig_of(model, data, num_samples=None)["mutual_info"], direct["mutual_info"])


def test_mig_is_an_alias_of_sampling_mig_of_and_the_package_keeps_every_name():
    model, data = ReadOutModel(), toy_factor_dataset()
    alias = mig(model, data, ["x", "y"], 500, seed=1)
    plain = sampling_mig_of(model, data, ["x", "y"], 500, seed=1)
    np.testing.assert_array_equal(alias["mutual_info"], plain["mutual_info"])
    assert alias["per_factor"] == plain["per_factor"]
    for name in ("mig", "sampling_mig", "sampling_mig_of", "discrete_mig", "discrete_mig_of", "DSPRITES_MIG_FACTORS"):
        assert name in untwine.metrics.__all__ and hasattr(untwine.metrics, name), name


# --- sampling MIG from labelled images without a full grid ---------------------------------------------------


def test_labelled_mig_equals_the_grid_mig_on_a_full_grid():
    # Same seed, same codes, same subsets: p(v) = 1/|V_k|, H(v_k) = log |V_k| and each value's images are the grid's
    # slice, so the two estimators compute the same numbers (subsampled, and with every code used).
    classes, v = grid()
    loc = v + 0.3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(2))
    scale = torch.full_like(loc, 0.1)
    for num_samples in (40, 300, len(loc)):
        for groups in (None, [[0], [1, 2], [3]]):
            want = sampling_mig(loc, scale, SIZES, factor_names=NAMES, num_samples=num_samples, seed=4, groups=groups)
            got = labelled_sampling_mig(loc, scale, classes, NAMES, num_samples, seed=4, groups=groups)
            assert got["factors"] == want["factors"] == SCORED  # the constant factor is not scored
            np.testing.assert_allclose(got["mutual_info"], want["mutual_info"], rtol=1e-9, atol=1e-12)
            assert got["mig"] == pytest.approx(want["mig"], rel=1e-9, abs=1e-12)
    only = labelled_sampling_mig(loc, scale, torch.as_tensor(classes), NAMES, 300, seed=4, scored=["y", 2])
    assert only["factors"] == ["y", "b"] and only["mutual_info"].shape == (2, 4)


def test_labelled_mig_weighs_values_by_their_frequency_and_normalises_by_the_label_entropy():
    # One binary factor with p(v) = (0.8, 0.2): latent 0 is N(0, 1) for v = 0 and N(1.5, 0.3^2) for v = 1, so
    # I(z_0; v) = H(mixture) - 0.8 H(N(0, 1)) - 0.2 H(N(1.5, 0.3^2)), integrated numerically, over the labels' entropy
    # H(v) = -0.8 log 0.8 - 0.2 log 0.2. Latent 1 is noise. Weighing the values equally or normalising by log 2 would
    # give 1.27 and 0.40 instead of the 0.55 checked here.
    n0, n1 = 4000, 1000
    labels = np.r_[np.zeros(n0, int), np.ones(n1, int)][:, None]
    loc = torch.zeros(n0 + n1, 2)
    loc[n0:, 0] = 1.5
    scale = torch.ones_like(loc)
    scale[n0:, 0] = 0.3
    p = np.array([n0, n1]) / (n0 + n1)

    def neg_plogp(t):
        q = p[0] * stats.norm.pdf(t, 0, 1) + p[1] * stats.norm.pdf(t, 1.5, 0.3)
        return -q * np.log(q)

    h_mix = integrate.quad(neg_plogp, -9, 9, limit=200)[0]
    h_cond = p[0] * stats.norm(0, 1).entropy() + p[1] * stats.norm(1.5, 0.3).entropy()
    exact = (h_mix - h_cond) / -(p * np.log(p)).sum()
    assert 0.5 < exact < 0.6
    got = labelled_sampling_mig(loc, scale, labels, num_samples=n0 + n1, seed=0)
    assert got["factors"] == ["factor_0"]
    assert got["mutual_info"][0, 0] == pytest.approx(exact, abs=0.02)
    assert got["mutual_info"][0, 1] < 0.02


def test_labelled_mig_scores_a_random_subset_of_the_grid():
    classes, v = grid()
    keep = torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:700].sort().values
    classes, v = classes[keep.numpy()], v[keep]
    got = labelled_sampling_mig(v, torch.full_like(v, 0.01), classes, NAMES, num_samples=700)
    assert got["factors"] == SCORED and got["mutual_info"].shape == (4, 4)
    # each code still carries all of its factor's (empirical) entropy
    np.testing.assert_allclose(np.diag(got["mutual_info"]), 1.0, atol=0.03)
    assert got["mig"] > 0.9
    rotated = v.clone()
    rotated[:, 2], rotated[:, 3] = (v[:, 2] + v[:, 3]) / math.sqrt(2), (v[:, 2] - v[:, 3]) / math.sqrt(2)
    per = labelled_sampling_mig(rotated, torch.full_like(v, 0.01), classes, NAMES, num_samples=700)["per_factor"]
    assert per["x"] < 0.1 and per["y"] < 0.1 and per["a"] > 0.9


def test_labelled_mig_checks_its_input():
    classes, v = grid()
    scale = torch.full_like(v, 0.1)
    with pytest.raises(ValueError, match="one column per factor"):
        labelled_sampling_mig(v, scale, classes[:, 1])
    with pytest.raises(ValueError, match="one column per factor"):
        labelled_sampling_mig(v, scale, classes[:-1])
    with pytest.raises(ValueError, match="integer factor classes"):
        labelled_sampling_mig(v, scale, classes.astype(float))
    with pytest.raises(ValueError, match="single value"):
        labelled_sampling_mig(v, scale, classes, NAMES, scored=["const"])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        labelled_sampling_mig(v, scale[:, :2], classes)


def test_labelled_mig_of_encodes_any_labelled_dataset():
    model, data = ReadOutModel().train(), toy_factor_dataset()
    got = labelled_sampling_mig_of(model, data, num_samples=500, seed=3)
    assert model.training
    np.testing.assert_allclose(got["mutual_info"], sampling_mig_of(model, data, num_samples=500, seed=3)["mutual_info"])
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(1))[:800].sort().values
    subset = data.subset(keep)  # an ImageDataset: no grid
    subset.factor_names = data.factor_names
    got = labelled_sampling_mig_of(model, subset, num_samples=800)
    assert got["factors"] == SCORED and got["mig"] > 0.9
    assert labelled_sampling_mig_of(model, subset, ["x"], num_samples=200)["factors"] == ["x"]
    with pytest.raises(ValueError, match="integer factor classes"):
        labelled_sampling_mig_of(model, ImageDataset(data.images, data.targets[:, 1], 1.0, "digits"))
    for name in ("labelled_sampling_mig", "labelled_sampling_mig_of"):
        assert name in untwine.metrics.__all__ and hasattr(untwine.metrics, name), name
