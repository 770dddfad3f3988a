"""disentanglement_lib's scores on synthetic codes whose answer follows from the definitions, as its own tests do:
codes equal to the factors score at the top, noise near chance, rotated or duplicated codes lose what each score
penalises, and the invariances each definition implies hold."""

import functools
import math

import numpy as np
import pytest
import torch
from torch import nn

import untwine.metrics
from untwine.data import FactorDataset
from untwine.data.base import ImageDataset
from untwine.data.dsprites import DSprites
from untwine.metrics.scores import (
    _dci_from_importance,
    _modularity,
    beta_vae_score,
    beta_vae_score_of,
    dci,
    dci_of,
    factor_vae_score,
    factor_vae_score_of,
    gaussian_total_correlation,
    gaussian_total_correlation_of,
    modularity_explicitness,
    modularity_explicitness_of,
    sap,
    sap_of,
)
from untwine.pyro_models import VAE, VAEConfig

# Three factors with 2, 3 and 4 values; every combination 40 times (960 labelled rows).
SIZES = (2, 3, 4)
NAMES = ["a", "b", "c"]
# Small budgets keep the file fast; the classifiers and vote counts are still far from their noise floor.
BATCH = dict(num_train=400, num_eval=300)
FVAE = dict(BATCH, num_variance_estimate=1000)
SPLIT = dict(num_train=400, num_test=250)


def grid(sizes=SIZES, repeats=40):
    """Every combination of factor classes, ``repeats`` times (rows ordered as a row-major grid)."""
    classes = np.indices(sizes).reshape(len(sizes), -1).T
    return np.repeat(classes, repeats, axis=0)


FACTORS = grid()


def aligned(factors=FACTORS, noise=0.01, seed=0):
    """Code j = factor j, with a little noise so that no two rows tie."""
    return factors + noise * np.random.default_rng(seed).normal(size=factors.shape)


def rotated(codes):
    """Codes of factors b and c mixed by a 45-degree rotation: each carries both."""
    out = codes.copy()
    out[:, 1], out[:, 2] = (codes[:, 1] + codes[:, 2]) / math.sqrt(2), (codes[:, 1] - codes[:, 2]) / math.sqrt(2)
    return out


@functools.cache
def aligned_dci():
    """DCI of the aligned codes, which several tests compare with (its trees are the slow part of this file)."""
    return dci(aligned(), FACTORS, factor_names=NAMES, **SPLIT)


def all_scores(codes, factors=FACTORS, seed=0):
    """Every supervised score's numbers on one set of codes (floats, and DCI's importance and SAP's score matrix)."""
    out = {}
    for name, value in beta_vae_score(codes, factors, seed=seed, **BATCH).items():
        out[f"beta_vae/{name}"] = value
    for name, value in factor_vae_score(codes, factors, seed=seed, **FVAE).items():
        out[f"factor_vae/{name}"] = value
    for score in (dci, sap, modularity_explicitness):
        for name, value in score(codes, factors, seed=seed, **SPLIT).items():
            if isinstance(value, (float, np.ndarray)):
                out[f"{score.__name__}/{name}"] = value
    return out


def floats(scores):
    return {name: value for name, value in scores.items() if isinstance(value, float)}


# --- where the scores sit -------------------------------------------------------------------------------------------


def test_codes_equal_to_the_factors_score_at_the_top():
    codes = aligned()
    assert beta_vae_score(codes, FACTORS, **BATCH) == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    assert factor_vae_score(codes, FACTORS, **FVAE) == {
        "train_accuracy": 1.0,
        "eval_accuracy": 1.0,
        "num_active_dims": 3,
    }
    got = aligned_dci()
    assert got["disentanglement"] > 0.99 and got["completeness"] > 0.99
    assert got["informativeness_train"] == 1.0 and got["informativeness_test"] == 1.0
    assert got["importance"].shape == (3, 3) and got["factors"] == NAMES
    # each code's importance sits on its own factor
    np.testing.assert_allclose(got["importance"], np.eye(3), atol=1e-3)
    got = sap(codes, FACTORS, **SPLIT)
    # The one-code classifier is perfect on the binary factor (a threshold splits its two values) ...
    assert got["score_matrix"][0, 0] == 1.0
    # ... and the best code of every factor is its own code.
    assert (got["score_matrix"].argmax(0) == [0, 1, 2]).all()
    assert got["sap"] > 0.3
    got = modularity_explicitness(codes, FACTORS, **SPLIT)
    assert got["modularity"] > 0.99
    assert got["explicitness_train"] == pytest.approx(1.0, abs=1e-6)
    assert got["explicitness_test"] == pytest.approx(1.0, abs=1e-6)


def test_pure_noise_codes_score_near_chance():
    noise = np.random.default_rng(1).normal(size=(len(FACTORS), 3))
    chance = 1 / 3  # three factors to tell apart
    got = beta_vae_score(noise, FACTORS, **BATCH)
    assert abs(got["eval_accuracy"] - chance) < 0.1
    assert abs(factor_vae_score(noise, FACTORS, **FVAE)["eval_accuracy"] - chance) < 0.1
    got = dci(noise, FACTORS, **SPLIT)
    # trees fitted to noise spread each code's importance over all factors
    assert got["disentanglement"] < 0.1 and got["completeness"] < 0.1
    # the test accuracy is that of guessing the commonest class of each factor: (1/2 + 1/3 + 1/4) / 3
    assert got["informativeness_test"] < (1 / 2 + 1 / 3 + 1 / 4) / 3 + 0.08
    assert sap(noise, FACTORS, **SPLIT)["sap"] < 0.05
    got = modularity_explicitness(noise, FACTORS, **SPLIT)
    assert abs(got["explicitness_test"] - 0.5) < 0.08
    # Modularity does not ask codes to be informative: the small plug-in informations of noise codes are as
    # "modular" as any, so noise scores well above 0 (a known blind spot of the definition, not a bug).
    assert got["modularity"] > 0.3


def test_rotating_two_factors_into_two_codes_lowers_the_scores_that_ask_for_one_code_per_factor():
    codes = aligned()
    mixed = rotated(codes)
    got = dci(mixed, FACTORS, **SPLIT)
    assert got["disentanglement"] < aligned_dci()["disentanglement"] - 0.2
    # the rotation loses no information: the codes still predict every factor
    assert got["informativeness_test"] > 0.95
    before, after = sap(codes, FACTORS, **SPLIT), sap(mixed, FACTORS, **SPLIT)
    assert after["sap"] < before["sap"] - 0.1
    # factor a keeps its perfect code and a wide gap (the runner-up is a code at chance); b and c lose theirs
    gap = lambda s: np.sort(s, 0)[-1] - np.sort(s, 0)[-2]  # noqa: E731
    assert after["score_matrix"][0, 0] == 1.0 and gap(after["score_matrix"])[0] > 0.4
    assert (gap(after["score_matrix"])[1:] < gap(before["score_matrix"])[1:] - 0.1).all()
    modular = modularity_explicitness(codes, FACTORS, **SPLIT)["modularity"]
    assert modularity_explicitness(mixed, FACTORS, **SPLIT)["modularity"] < modular - 0.05


def test_duplicated_latents_lower_completeness_and_close_the_sap_gap_but_keep_modularity():
    codes = aligned()
    twice = np.repeat(codes, 2, axis=1)
    got = dci(twice, FACTORS, **SPLIT)
    assert got["completeness"] < aligned_dci()["completeness"] - 0.2
    assert got["disentanglement"] > 0.95  # each code still matters for one factor only
    # two identical codes are equally good predictors of their factor: every gap is exactly 0
    assert sap(twice, FACTORS, **SPLIT)["sap"] == 0.0
    assert modularity_explicitness(twice, FACTORS, **SPLIT)["modularity"] > 0.99
    assert gaussian_total_correlation(twice) == math.inf


# --- invariances the definitions imply ------------------------------------------------------------------------------


def partly_informative():
    """Noisy codes of the three factors plus a noise code: every score lies strictly inside its range."""
    rng = np.random.default_rng(3)
    return np.c_[FACTORS + 0.4 * rng.normal(size=FACTORS.shape), rng.normal(size=len(FACTORS))]


def test_permuting_latent_dimensions_changes_no_score():
    codes = partly_informative()
    perm = [2, 0, 3, 1]
    before, after = all_scores(codes), all_scores(codes[:, perm])
    # Gradient-boosted trees break ties between equally good splits by visiting features in a seeded random order,
    # so DCI moves by a little when the columns move; the linear classifiers see the same problem reordered.
    for name, value in floats(before).items():
        tolerance = 0.02 if name.startswith("dci/") else 1e-9
        assert after[name] == pytest.approx(value, abs=tolerance), name
    np.testing.assert_array_equal(after["sap/score_matrix"], before["sap/score_matrix"][perm])
    np.testing.assert_allclose(after["dci/importance"], before["dci/importance"][perm], atol=0.02)
    assert gaussian_total_correlation(codes[:, perm]) == pytest.approx(gaussian_total_correlation(codes), rel=1e-12)


def test_rescaling_code_dimensions_leaves_the_scale_free_scores_unchanged():
    codes = partly_informative()
    scale = np.array([0.3, 7.0, 2.5, 0.05])
    before, after = all_scores(codes), all_scores(codes * scale)
    # FactorVAE divides by the global spread, trees and histograms only compare values within a code, and the
    # explicitness classifier sees standardised codes: all unchanged.
    for name, value in before.items():
        if name.startswith(("factor_vae/", "dci/", "modularity_explicitness/")):
            np.testing.assert_allclose(after[name], value, rtol=0, atol=1e-12, err_msg=name)
    # SAP's LinearSVC (C = 0.01) penalises its weight, so a rescaled code changes the fit only through the
    # regularisation, which hundreds of rows outweigh: the score moves a little, not exactly nothing.
    assert after["sap/sap"] == pytest.approx(before["sap/sap"], abs=0.05)
    assert gaussian_total_correlation(codes * scale) == pytest.approx(gaussian_total_correlation(codes), rel=1e-9)


# --- Gaussian total correlation -------------------------------------------------------------------------------------


def test_gaussian_total_correlation_is_zero_for_independent_codes():
    # Orthogonal centred columns: the sample covariance is exactly diagonal, so TC is exactly 0.
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)
    assert gaussian_total_correlation(hadamard[:, 1:] * [1.0, 2.0, 5.0]) == 0.0
    # Independent Gaussian codes: 0 within sampling error (the estimate's mean is about D(D-1) / 4N = 1.5e-4).
    codes = np.random.default_rng(0).normal(size=(20000, 4)) * [1.0, 3.0, 0.1, 10.0]
    assert 0.0 <= gaussian_total_correlation(codes) < 2e-3


def test_gaussian_total_correlation_matches_the_bivariate_closed_form():
    # Six points whose sample correlation is exactly 1/3: TC = -1/2 log(1 - 1/9).
    six = np.array([[1, 1], [1, 1], [-1, -1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    assert gaussian_total_correlation(six) == pytest.approx(-0.5 * math.log(8 / 9), rel=1e-12)
    rho = 0.6
    cov = [[4.0, rho * 2 * 0.5], [rho * 2 * 0.5, 0.25]]
    codes = np.random.default_rng(0).multivariate_normal([1.0, -2.0], cov, size=50000)
    assert gaussian_total_correlation(torch.as_tensor(codes)) == pytest.approx(-0.5 * math.log(1 - rho**2), abs=0.01)


# --- values that follow from the definitions ------------------------------------------------------------------------


def test_fixed_seed_scores_of_codes_equal_to_the_factors_are_exactly_one():
    # With codes exactly equal to the factors, a batch holding factor k fixed has code k constant: its feature is
    # exactly 0 (beta-VAE), its variance exactly 0 and so its argmin is k (FactorVAE) - every point is classified
    # right. A constant extra code has no spread and is pruned.
    codes = np.c_[FACTORS.astype(float), np.zeros(len(FACTORS))]
    assert beta_vae_score(codes, FACTORS, seed=7, **BATCH) == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    got = factor_vae_score(codes, FACTORS, seed=7, **FVAE)
    assert got == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 3}


def test_dci_weights_match_a_hand_computed_importance_matrix():
    # Code 0 splits its importance evenly over both factors (disentanglement 0), code 1 serves factor 0 only (1);
    # each holds half of the importance, so D = 1/2. Factor 0 is spread 1/3 : 2/3 over the codes, factor 1 sits on
    # code 0 alone; the factors hold 3/4 and 1/4 of the importance.
    importance = np.array([[0.5, 0.5], [1.0, 0.0]])
    d, c = _dci_from_importance(importance)
    assert d == pytest.approx(0.5, abs=1e-8)
    spread = -(1 / 3) * math.log2(1 / 3) - (2 / 3) * math.log2(2 / 3)
    assert c == pytest.approx(0.75 * (1 - spread) + 0.25 * 1.0, abs=1e-8)
    # an all-zero matrix (no classifier used any code) scores 0 on both
    assert _dci_from_importance(np.zeros((3, 2))) == pytest.approx((0.0, 0.0), abs=1e-8)


def test_modularity_matches_a_hand_computed_mutual_information_matrix():
    mutual_info = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    # code 0: 1 - 1^2 / (2 * 2^2) = 7/8; code 1 informs about nothing: 0; code 2 is spread evenly: 1 - 2 / 2 = 0
    np.testing.assert_allclose(_modularity(mutual_info), [7 / 8, 0.0, 0.0])


def test_factor_vae_score_prunes_collapsed_dimensions_and_scores_zero_without_active_ones():
    codes = aligned()
    # a dimension whose global standard deviation is below the threshold (0.05) is not active
    tiny = np.c_[codes, 0.01 * np.random.default_rng(0).normal(size=len(codes))]
    assert factor_vae_score(tiny, FACTORS, **FVAE)["num_active_dims"] == 3
    assert factor_vae_score(tiny, FACTORS, prune_threshold=0.0, **FVAE)["num_active_dims"] == 4
    collapsed = factor_vae_score(0.01 * codes, FACTORS, **FVAE)
    assert collapsed == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_lasso_importances_agree_with_trees_on_aligned_codes():
    got = dci(aligned(), FACTORS, regressor="lasso", **SPLIT)
    assert got["disentanglement"] > 0.95 and got["completeness"] > 0.95 and got["informativeness_test"] == 1.0
    mixed = dci(rotated(aligned()), FACTORS, regressor="lasso", **SPLIT)
    assert mixed["disentanglement"] < got["disentanglement"] - 0.2


# --- labelled rows, seeds and bad input -----------------------------------------------------------------------------


def test_every_score_runs_on_labelled_rows_without_a_full_grid():
    rng = np.random.default_rng(5)
    factors = grid(repeats=80)
    keep = rng.random(len(factors)) < 0.8
    keep &= ~((factors[:, 0] == 1) & (factors[:, 2] == 3))  # a whole cell of the grid is missing
    keep &= ~((factors[:, 1] == 2) & (rng.random(len(factors)) < 0.7))  # one value is rare
    factors = factors[keep]
    codes = aligned(factors)
    got = all_scores(codes, factors)
    for name in ("beta_vae/eval_accuracy", "factor_vae/eval_accuracy", "dci/informativeness_test"):
        assert got[name] > 0.99, name
    assert got["dci/disentanglement"] > 0.95 and got["modularity_explicitness/modularity"] > 0.95
    assert got["modularity_explicitness/explicitness_test"] > 0.99
    assert 0.0 <= gaussian_total_correlation(codes) < 0.05


def test_scores_are_seeded_and_leave_the_global_random_state_alone():
    codes = partly_informative()
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    first, again = all_scores(codes, seed=1), all_scores(codes, seed=1)
    for name, value in first.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)
    # another seed draws other points and rows (checked on the cheap scores)
    noise = np.random.default_rng(0).normal(size=codes.shape)
    assert beta_vae_score(noise, FACTORS, seed=2, **BATCH) != beta_vae_score(noise, FACTORS, seed=1, **BATCH)
    assert not np.array_equal(sap(codes, FACTORS, seed=2, **SPLIT)["score_matrix"], first["sap/score_matrix"])
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


BAD_INPUT = [
    (beta_vae_score, dict(factors=FACTORS[:, 0]), "1-D targets"),
    (dci, dict(factors=FACTORS[:-1]), "rows of factors"),
    (sap, dict(factors=FACTORS.astype(float)), "integer factor classes"),
    (modularity_explicitness, dict(codes=np.zeros((1, 3)), factors=FACTORS[:1]), "at least 2 rows"),
    (factor_vae_score, dict(codes=np.full((len(FACTORS), 3), np.nan)), "NaN"),
    (beta_vae_score, dict(factors=np.c_[FACTORS[:, :1], np.zeros((len(FACTORS), 2), int)]), "at least two factors"),
    (dci, dict(factors=np.c_[FACTORS, np.zeros(len(FACTORS), int)]), "single value"),
    (dci, dict(num_train=900, num_test=100), "at most 960"),
    (dci, dict(regressor="forest"), "regressor"),
    (factor_vae_score, dict(batch_size=1), "batch_size"),
    (beta_vae_score, dict(num_train=0), "num_train"),
    (sap, dict(codes=aligned()[:, :1]), "D >= 2"),
    (modularity_explicitness, dict(factors=FACTORS[:, :1]), "K >= 2"),
    (modularity_explicitness, dict(num_bins=0), "num_bins"),
    (dci, dict(factor_names=["a", "b"]), "factor names"),
]


@pytest.mark.parametrize("score,change,message", BAD_INPUT, ids=[m for _, _, m in BAD_INPUT])
def test_bad_input_raises_a_value_error_saying_what_is_wrong(score, change, message):
    args = dict(codes=aligned(), factors=FACTORS, **(SPLIT if score in (dci, sap, modularity_explicitness) else {}))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        score(**args)


def test_gaussian_total_correlation_refuses_constant_codes():
    with pytest.raises(ValueError, match="constant"):
        gaussian_total_correlation(np.c_[aligned(), np.ones(len(FACTORS))])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_total_correlation(np.zeros(5))


# --- the _of wrappers -----------------------------------------------------------------------------------------------


class ReadOutModel(nn.Module):
    """'Encoder' whose mean is the code stored in the image's pixels."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def encode(self, x):
        loc = x.flatten(1) + self.dummy
        return loc, torch.full_like(loc, 0.01)


# A factor grid with a constant first factor (as dSprites' colour), 60 images; each image holds its codes.
TOY_SIZES = (1, 3, 4, 5)
TOY_NAMES = ("const", "x", "y", "z")


def toy_dataset():
    classes = np.indices(TOY_SIZES).reshape(len(TOY_SIZES), -1).T
    codes = torch.tensor(aligned(classes[:, 1:], noise=0.05), dtype=torch.float32)
    images = codes.reshape(-1, 1, 1, 3)
    return FactorDataset(images, torch.as_tensor(classes), classes.astype(float), TOY_NAMES, TOY_SIZES, 1.0, "toy")


TOY_ARGS = {
    beta_vae_score_of: dict(batch_size=8, num_train=60, num_eval=40),
    factor_vae_score_of: dict(batch_size=8, num_train=60, num_eval=40, num_variance_estimate=100),
    dci_of: dict(num_train=35, num_test=20),
    sap_of: dict(num_train=35, num_test=20),
    modularity_explicitness_of: dict(num_train=35, num_test=20),
}


def test_score_wrappers_encode_the_dataset_and_call_the_scores_on_its_means():
    model, data = ReadOutModel().train(), toy_dataset()
    codes, classes = data.images.flatten(1), data.targets[:, 1:]
    for wrapper, args in TOY_ARGS.items():
        score = getattr(untwine.metrics.scores, wrapper.__name__.removesuffix("_of"))
        got = wrapper(model, data, encode_batch_size=50, seed=4, **args)
        want = score(codes, classes, seed=4, factor_names=list(TOY_NAMES[1:]), **args)
        for name, value in want.items():  # the constant factor is dropped; the rest is the same computation
            np.testing.assert_array_equal(got[name], value, err_msg=f"{wrapper.__name__}: {name}")
        assert model.training
    assert gaussian_total_correlation_of(model, data) == gaussian_total_correlation(codes)
    # a chosen subset of factors, by name
    assert dci_of(model, data, ["y", "x"], **TOY_ARGS[dci_of])["factors"] == ["y", "x"]


def test_score_wrappers_accept_labelled_images_without_a_grid_and_refuse_other_targets():
    model, data = ReadOutModel(), toy_dataset()
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:56].sort().values
    subset = data.subset(keep)  # an ImageDataset: no grid, no factor sizes
    subset.factor_names = data.factor_names
    for wrapper, args in TOY_ARGS.items():
        got = wrapper(model, subset, **args)
        assert all(0.0 <= v <= 1.0 for v in got.values() if isinstance(v, float)), wrapper.__name__
    assert dci_of(model, subset, **TOY_ARGS[dci_of])["factors"] == ["x", "y", "z"]
    assert dci_of(model, subset, **TOY_ARGS[dci_of])["informativeness_test"] > 0.9
    one_label = ImageDataset(data.images, data.targets[:, 1], 1.0, "digits")
    with pytest.raises(ValueError, match=r"\(N, K\) integer factor classes"):
        sap_of(model, one_label)
    with pytest.raises(ValueError, match="single value"):
        sap_of(model, data, ["const", "x"])
    with pytest.raises(ValueError, match="unknown factor"):
        sap_of(model, data, ["colour"])
    with pytest.raises(ValueError, match="at most 60"):
        dci_of(model, data)  # the defaults ask for 15,000 disjoint rows


def test_score_wrappers_run_on_a_vae_over_a_dsprites_subgrid():
    subgrid = {"shape": [0, 2], "scale": [0, 5], "orientation": [0, 10], "posX": [0, 31], "posY": [3, 30]}
    data = DSprites(subgrid=subgrid, cache=False)  # 32 images; colour takes one value
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_shape=(1, 64, 64), latent_dim=4))
    small = {
        beta_vae_score_of: dict(batch_size=4, num_train=40, num_eval=20),
        factor_vae_score_of: dict(batch_size=4, num_train=40, num_eval=20, num_variance_estimate=32),
        dci_of: dict(num_train=20, num_test=12),
        sap_of: dict(num_train=20, num_test=12),
        modularity_explicitness_of: dict(num_train=20, num_test=12),
    }
    for wrapper, args in small.items():
        got = wrapper(vae, data, **args)
        assert all(0.0 <= v <= 1.0 for v in got.values() if isinstance(v, float)), wrapper.__name__
    # disentanglement_lib's convention: every factor that varies, shape included
    assert dci_of(vae, data, **small[dci_of])["factors"] == ["shape", "scale", "orientation", "posX", "posY"]
    assert gaussian_total_correlation_of(vae, data) >= 0.0


def test_the_package_exports_every_score():
    for name in (
        "beta_vae_score",
        "factor_vae_score",
        "dci",
        "sap",
        "modularity_explicitness",
        "gaussian_total_correlation",
    ):
        for full in (name, f"{name}_of"):
            assert full in untwine.metrics.__all__ and hasattr(untwine.metrics, full), full
