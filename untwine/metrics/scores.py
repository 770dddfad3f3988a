r"""The disentanglement scores of disentanglement_lib (Locatello et al. 2019), as small functions of codes and factors.

Locatello et al., "Challenging common assumptions in the unsupervised learning of disentangled representations"
(ICML 2019), compare models on one set of implementations of the published scores; this module follows those
implementations and their defaults, so that a number here is comparable with the numbers of that study:

* :func:`beta_vae_score` (Higgins et al. 2017), :func:`factor_vae_score` (Kim & Mnih 2018): which factor was held
  fixed in a batch, predicted from the codes of the batch;
* :func:`dci` (Eastwood & Williams 2018): disentanglement, completeness and informativeness from the feature
  importances of one classifier per factor;
* :func:`sap` (Kumar et al. 2018): the gap in single-code prediction accuracy between the two best codes;
* :func:`modularity_explicitness` (Ridgeway & Mozer 2018);
* :func:`gaussian_total_correlation`: the unsupervised total correlation of a Gaussian fitted to the codes.

The discrete MIG of the same study is :func:`untwine.metrics.mutual_info_gap.discrete_mig`.

Each score takes ``codes``, an ``(N, D)`` array or tensor (the encoder means, as in disentanglement_lib), and
``factors``, the ``(N, K)`` integer factor classes of the same rows; its ``_of`` variant takes a model and a
dataset, encodes every image (:func:`~untwine.metrics.utils.encode_dataset`, one batch on the device at a time) and
calls it with the means, ``data.targets`` and ``data.factor_names``. A wrapper accepts a
:class:`~untwine.data.base.FactorDataset` or any dataset whose ``targets`` are ``(N, K)`` integer factor classes
(``factor_names`` names them; no full grid is needed), takes ``factors`` (names or positions of the factors to
score; default every factor that takes more than one value in the data, which for dSprites means shape included and
colour left out, as in disentanglement_lib), ``encode_batch_size`` and ``device`` (where the images are encoded;
default the model's), and passes any other keyword argument (``seed``, ``num_train``, ...) to the score.

**Rows instead of a generator.** disentanglement_lib draws factors from the full grid and renders an image for
them. Here the images are a fixed set of labelled rows, and every draw is a draw of rows: "an image with factors
uniform on the grid" is a uniform row, and "an image sharing the value of factor :math:`k` with row :math:`r`" is a
uniform row among those with the same value of factor :math:`k`. On a full grid with every image present (a
:class:`~untwine.data.base.FactorDataset`) the two are the same distribution; on a labelled dataset without a full
grid the rows that exist are used as they are (the factors are then distributed as in the data, not uniformly).

**Conventions shared by all scores.** Randomness comes from a private ``numpy.random.Generator`` seeded by
``seed`` (the global random state is neither read nor changed); each scikit-learn estimator gets an integer seed
drawn from it, the same one for every estimator of a call, so that reordering the code dimensions does not reseed
anything. Train and test rows are drawn without replacement and disjoint (disentanglement_lib draws them
independently with replacement, so on dSprites about 70 of its 5,000 test rows also sit in the 10,000 training
rows). scikit-learn's ``ConvergenceWarning`` is silenced: the scores are defined by disentanglement_lib's
iteration budgets (scikit-learn's defaults), converged or not.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import sklearn
import torch
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mutual_info_score, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import LinearSVC
from torch import nn

from untwine.metrics.mutual_info_gap import _factor_indices, _histogram_discretize
from untwine.metrics.utils import encode_dataset

# Elements of one (points x batch x dims) block of gathered codes: bounds memory whatever batch_size and D are.
_BLOCK_ELEMENTS = 2**22
# disentanglement_lib adds this to the importances before taking entropies, so an all-zero row is uniform.
_DCI_EPS = 1e-11
_SKLEARN_VERSION = tuple(int(p) for p in re.findall(r"\d+", sklearn.__version__)[:2])

# --- input checks --------------------------------------------------------------------------------------------------


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _codes(codes: np.ndarray | torch.Tensor, what: str, min_rows: int = 2) -> np.ndarray:
    """``codes`` as a float64 ``(N, D)`` array, or a ValueError saying what is wrong."""
    codes = _as_array(codes)
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise ValueError(f"{what}: codes must be an (N, D) array of encoder means, got shape {codes.shape}")
    if len(codes) < min_rows:
        raise ValueError(f"{what} needs at least {min_rows} rows of codes, got {len(codes)}")
    codes = codes.astype(np.float64)
    if not np.isfinite(codes).all():
        raise ValueError(f"{what}: codes contain NaN or infinite values; check the encoder's output")
    return codes


def _codes_and_factors(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    factor_names: Sequence[str] | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Checked ``(N, D)`` float64 codes, ``(N, K)`` int64 factors and one name per factor."""
    codes = _codes(codes, what)
    factors = _as_array(factors)
    if factors.ndim == 1:
        raise ValueError(
            f"{what} needs (N, K) factor classes, got 1-D targets (one label per image); give one column per "
            "factor (e.g. factors[:, None] for a single factor)"
        )
    if factors.ndim != 2 or factors.shape[1] == 0:
        raise ValueError(f"{what}: factors must be an (N, K) array of factor classes, got shape {factors.shape}")
    if len(factors) != len(codes):
        raise ValueError(f"{what}: {len(codes)} rows of codes but {len(factors)} rows of factors; give one per image")
    if not (np.issubdtype(factors.dtype, np.integer) or factors.dtype == bool):
        raise ValueError(
            f"{what}: factors must be integer factor classes, got dtype {factors.dtype}; pass the classes "
            "(data.targets), not the factor values"
        )
    k_total = factors.shape[1]
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(k_total)]
    if len(names) != k_total:
        raise ValueError(f"{what}: {len(names)} factor names for {k_total} factor columns")
    return codes, factors.astype(np.int64), names


def _varying(factors: np.ndarray) -> np.ndarray:
    """Positions of the factors that take more than one value in these rows."""
    return np.array([k for k in range(factors.shape[1]) if np.unique(factors[:, k]).size > 1], dtype=np.int64)


def _require_varying(factors: np.ndarray, names: list[str], what: str, rows: str = "the given rows") -> None:
    constant = [names[k] for k in range(factors.shape[1]) if np.unique(factors[:, k]).size < 2]
    if constant:
        raise ValueError(
            f"{what}: factors {constant} take a single value in {rows}; no classifier can be fit to them. Drop those "
            "columns (the _of wrappers drop constant factors by default) or draw more rows"
        )


def _positive(what: str, **counts: int) -> None:
    for name, value in counts.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{what}: {name} must be a positive integer, got {value!r}")


def _split(n: int, num_train: int, num_test: int, rng: np.random.Generator, what: str) -> tuple[np.ndarray, ...]:
    """Disjoint training and test rows, drawn without replacement."""
    _positive(what, num_train=num_train, num_test=num_test)
    if num_train < 2:
        raise ValueError(f"{what}: num_train must be at least 2 to fit a classifier, got {num_train}")
    if num_train + num_test > n:
        raise ValueError(
            f"{what} draws {num_train} training and {num_test} test rows without overlap, but there are only {n} rows; "
            f"lower num_train and num_test so that their sum is at most {n}"
        )
    perm = rng.permutation(n)
    return perm[:num_train], perm[num_train : num_train + num_test]


def _sklearn_seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31 - 1))


def _quiet_fit(estimator, x: np.ndarray, y: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(x, y)


# --- sampling rows that share a factor value -------------------------------------------------------------------------


class _SameValueRows:
    """Draws, for rows ``r`` and factors ``k``, a uniform row with the same value of factor ``k`` as ``r``.

    The rows sorted by each factor (``order[k]``) hold each value's rows contiguously; ``start[k, r]`` and
    ``count[k, r]`` locate the block of row ``r``'s value, so a draw is one integer per request and one lookup.
    """

    def __init__(self, factors: np.ndarray):
        n, k_total = factors.shape
        self.order = np.argsort(factors, axis=0, kind="stable").T.copy()
        self.start = np.empty((k_total, n), dtype=np.int64)
        self.count = np.empty((k_total, n), dtype=np.int64)
        for k in range(k_total):
            _, inverse, counts = np.unique(factors[:, k], return_inverse=True, return_counts=True)
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
            self.start[k] = offsets[inverse]
            self.count[k] = counts[inverse]

    def draw(self, k: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Rows sharing factor ``k`` with ``rows`` (arrays broadcast to one shape)."""
        k, rows = np.broadcast_arrays(k, rows)
        return self.order[k, self.start[k, rows] + rng.integers(0, self.count[k, rows])]


def _candidate_factors(factors: np.ndarray, names: list[str], what: str) -> np.ndarray:
    candidates = _varying(factors)
    if len(candidates) < 2:
        raise ValueError(
            f"{what} predicts which factor was held fixed, so it needs at least two factors that vary; "
            f"{len(candidates)} of {names} vary in these rows"
        )
    return candidates


def _block(batch_size: int, d: int) -> int:
    return max(1, _BLOCK_ELEMENTS // (batch_size * d))


# --- beta-VAE score --------------------------------------------------------------------------------------------------


def _beta_vae_points(
    codes: np.ndarray,
    rows: _SameValueRows,
    candidates: np.ndarray,
    batch_size: int,
    num_points: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    n, d = codes.shape
    labels = rng.choice(candidates, size=num_points)
    first = rng.integers(n, size=(num_points, batch_size))
    second = rows.draw(labels[:, None], first, rng)
    features = np.empty((num_points, d))
    step = _block(batch_size, d)
    for s in range(0, num_points, step):
        part = slice(s, s + step)
        features[part] = np.abs(codes[first[part]] - codes[second[part]]).mean(1)
    return features, labels


def beta_vae_score(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: int = 0,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""The β-VAE score of Higgins et al. (2017), as disentanglement_lib computes it.

    One data point of the score is made from a factor :math:`k`, drawn uniformly among the factors that vary, and
    :math:`B` = ``batch_size`` pairs of rows :math:`(a_b, b_b)` that share the value of factor :math:`k`: :math:`a_b`
    is a uniform row and :math:`b_b` a uniform row among those with the same value of factor :math:`k` (on a full
    grid this is disentanglement_lib's pair, whose other factors are drawn afresh). Its feature and label are

    .. math::

        f = \frac{1}{B} \sum_{b=1}^{B} \lvert z_{a_b} - z_{b_b} \rvert \in \mathbb{R}^D, \qquad y = k,

    and the score is the accuracy of a linear classifier that predicts :math:`y` from :math:`f`: a disentangled
    code holds the fixed factor in one coordinate, where :math:`f` is near 0.

    Conventions that set the number (disentanglement_lib's): ``num_train`` points train
    ``sklearn.linear_model.LogisticRegression()`` with scikit-learn's defaults (L2, :math:`C = 1`, lbfgs, 100
    iterations, no feature scaling), and ``num_eval`` further points, drawn independently, evaluate it. Factors
    that take one value in these rows are never chosen as :math:`k` (disentanglement_lib's datasets list only the
    factors that vary, e.g. not dSprites' colour); chance level is :math:`1 / K'` for :math:`K'` varying factors.

    :param codes: ``(N, D)`` codes (encoder means).
    :param factors: ``(N, K)`` integer factor classes of the same rows.
    :param batch_size: pairs per data point (disentanglement_lib: 64).
    :param num_train: data points for training (10,000). :param num_eval: data points for evaluation (5,000).
    :param seed: seeds the private generator.
    :param factor_names: names for messages (default ``factor_0``, ...).
    :returns: ``{"train_accuracy": float, "eval_accuracy": float}``.
    """
    what = "beta_vae_score"
    codes, factors, names = _codes_and_factors(codes, factors, factor_names, what)
    _positive(what, batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    candidates = _candidate_factors(factors, names, what)
    rng = np.random.default_rng(seed)
    rows = _SameValueRows(factors)
    x_train, y_train = _beta_vae_points(codes, rows, candidates, batch_size, num_train, rng)
    if np.unique(y_train).size < 2:
        raise ValueError(f"{what}: all {num_train} training points hold the same factor fixed; raise num_train")
    model = _quiet_fit(LogisticRegression(), x_train, y_train)
    x_eval, y_eval = _beta_vae_points(codes, rows, candidates, batch_size, num_eval, rng)
    return {
        "train_accuracy": float(np.mean(model.predict(x_train) == y_train)),
        "eval_accuracy": float(np.mean(model.predict(x_eval) == y_eval)),
    }


# --- FactorVAE score -------------------------------------------------------------------------------------------------


def _factor_vae_votes(
    codes: np.ndarray,
    rows: _SameValueRows,
    candidates: np.ndarray,
    k_total: int,
    batch_size: int,
    num_points: int,
    global_variance: np.ndarray,
    active: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(K, D)`` counts of (fixed factor, code dimension of least normalised variance) over ``num_points`` batches."""
    n, d = codes.shape
    labels = rng.choice(candidates, size=num_points)
    anchors = rng.integers(n, size=num_points)
    batch = rows.draw(labels[:, None], np.broadcast_to(anchors[:, None], (num_points, batch_size)), rng)
    active_dims = np.flatnonzero(active)
    codes_active = codes[:, active_dims]
    scale = global_variance[active_dims]
    argmin = np.empty(num_points, dtype=np.int64)
    step = _block(batch_size, len(active_dims))
    for s in range(0, num_points, step):
        part = slice(s, s + step)
        local = codes_active[batch[part]].var(1, ddof=1) / scale
        argmin[part] = active_dims[local.argmin(1)]
    return np.bincount(labels * d + argmin, minlength=k_total * d).reshape(k_total, d)


def factor_vae_score(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""The FactorVAE score of Kim & Mnih (2018), as disentanglement_lib computes it.

    Global variances :math:`s_j^2` of the code dimensions come from ``num_variance_estimate`` uniform rows (drawn
    with replacement, ``ddof=1``). A dimension is active when :math:`s_j \ge` ``prune_threshold``; note that
    disentanglement_lib compares the standard deviation, not the variance, with the threshold (its
    ``prune_dims``), and so does this function. Each data point draws a factor :math:`k` uniformly among the
    factors that vary and a batch :math:`\mathcal{B}` of ``batch_size`` rows sharing one value of factor
    :math:`k` (the value of a uniform row; the rows uniform among those with that value), and votes for

    .. math::

        d^\star = \operatorname{argmin}_{j \text{ active}} \frac{\widehat{\operatorname{Var}}_{n \in \mathcal{B}}
            (z_{nj})}{s_j^2}, \qquad (d^\star, k),

    the dimension that varies least after dividing each code by its global standard deviation (so the score does
    not change when a dimension is rescaled). The classifier is the majority vote: dimension :math:`d` predicts the
    factor with most training votes for it (ties and dimensions without votes: the first factor, as ``np.argmax``
    does); the accuracies are the shares of training and of evaluation votes it gets right,

    .. math::

        \mathrm{acc} = \frac{\sum_d V_{c(d), d}}{\sum_{k, d} V_{kd}}, \qquad c(d) = \operatorname{argmax}_k
            V^{\text{train}}_{kd}.

    Defaults are disentanglement_lib's (``batch_size=64``, 10,000 training and 5,000 evaluation points, 10,000 rows
    for the variances, threshold 0.05 of its study configuration). When no dimension is active both accuracies are
    0, as disentanglement_lib returns them. ``num_active_dims`` is the number of active dimensions (where
    disentanglement_lib reports the length of its mask, i.e. :math:`D`, whatever is pruned).

    :param codes: ``(N, D)`` codes (encoder means). :param factors: ``(N, K)`` integer factor classes.
    :param batch_size: rows per data point (at least 2, for a variance).
    :param num_variance_estimate: rows drawn for the global variances.
    :param prune_threshold: smallest global standard deviation of an active dimension.
    :param seed: seeds the private generator. :param factor_names: names for messages.
    :returns: ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}``.
    """
    what = "factor_vae_score"
    codes, factors, names = _codes_and_factors(codes, factors, factor_names, what)
    _positive(what, num_train=num_train, num_eval=num_eval, num_variance_estimate=num_variance_estimate)
    if int(batch_size) != batch_size or batch_size < 2:
        raise ValueError(f"{what}: batch_size must be at least 2 (a variance over the batch), got {batch_size!r}")
    if num_variance_estimate < 2:
        raise ValueError(f"{what}: num_variance_estimate must be at least 2, got {num_variance_estimate}")
    if prune_threshold < 0:
        raise ValueError(f"{what}: prune_threshold must be non-negative, got {prune_threshold}")
    candidates = _candidate_factors(factors, names, what)
    rng = np.random.default_rng(seed)
    n, d = codes.shape
    global_variance = codes[rng.integers(n, size=num_variance_estimate)].var(0, ddof=1)
    active = np.sqrt(global_variance) >= prune_threshold
    # A dimension constant over the variance rows cannot be normalised; it is never active, whatever the threshold.
    active &= global_variance > 0
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    rows = _SameValueRows(factors)
    k_total = factors.shape[1]
    args = (codes, rows, candidates, k_total, batch_size)
    train_votes = _factor_vae_votes(*args, num_train, global_variance, active, rng)
    classifier = train_votes.argmax(0)
    eval_votes = _factor_vae_votes(*args, num_eval, global_variance, active, rng)
    dims = np.arange(d)
    return {
        "train_accuracy": float(train_votes[classifier, dims].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, dims].sum() / eval_votes.sum()),
        "num_active_dims": int(active.sum()),
    }


# --- DCI -------------------------------------------------------------------------------------------------------------


def _normalised_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy along ``axis`` of ``p + eps`` normalised to sum 1, in base ``p.shape[axis]`` (scipy.stats.entropy)."""
    p = p + _DCI_EPS
    p = p / p.sum(axis, keepdims=True)
    return -(p * np.log(p)).sum(axis) / np.log(p.shape[axis])


def _dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of a ``(D, K)`` importance matrix (disentanglement_lib's weighting)."""
    per_code = 1.0 - _normalised_entropy(importance, axis=1)
    per_factor = 1.0 - _normalised_entropy(importance, axis=0)
    # An all-zero matrix weighs every code and factor equally, as disentanglement_lib does.
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    code_weight = weights.sum(1) / weights.sum()
    factor_weight = weights.sum(0) / weights.sum()
    return float(per_code @ code_weight), float(per_factor @ factor_weight)


def _l1_logistic(seed: int) -> LogisticRegression:
    # scikit-learn 1.8 deprecated ``penalty``: an L1 fit is ``l1_ratio=1`` there and ``penalty="l1"`` before.
    if _SKLEARN_VERSION >= (1, 8):
        return LogisticRegression(l1_ratio=1.0, solver="saga", random_state=seed)
    return LogisticRegression(penalty="l1", solver="saga", random_state=seed)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale by the training rows' mean and standard deviation (a constant column is only centred)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 0, std, 1.0)
    return [(x - mean) / std for x in (train, *others)]


def dci(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    num_train: int = 10000,
    num_test: int = 5000,
    regressor: str = "gbt",
    seed: int = 0,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""Disentanglement, completeness and informativeness of Eastwood & Williams (2018), as in disentanglement_lib.

    One classifier per factor :math:`k` predicts its class from all codes, trained on ``num_train`` uniform rows and
    tested on ``num_test`` other rows. Its importances fill column :math:`k` of the importance matrix
    :math:`R \in \mathbb{R}_{\ge 0}^{D \times K}`. With :math:`H_b` the entropy in base :math:`b`,

    .. math::

        \mathrm{D} &= \sum_{j=1}^{D} \rho_j \big(1 - H_K(P_{j\cdot})\big), \qquad
            P_{jk} = \frac{R_{jk}}{\sum_{k'} R_{jk'}}, \quad \rho_j = \frac{\sum_k R_{jk}}{\sum_{j'k} R_{j'k}}, \\
        \mathrm{C} &= \sum_{k=1}^{K} \tilde\rho_k \big(1 - H_D(\tilde P_{\cdot k})\big), \qquad
            \tilde P_{jk} = \frac{R_{jk}}{\sum_{j'} R_{j'k}}, \quad
            \tilde\rho_k = \frac{\sum_j R_{jk}}{\sum_{jk'} R_{jk'}},

    and informativeness is the classifiers' accuracy averaged over factors, on the training and on the test rows.
    Disentanglement is high when each code matters for one factor; completeness when each factor is captured by
    one code. As in disentanglement_lib, :math:`10^{-11}` is added to :math:`R` before the entropies, and
    completeness is weighted by each factor's share of the importance (Eastwood & Williams average over factors;
    the two agree for the GBT importances, which sum to 1 for every factor).

    ``regressor="gbt"`` (disentanglement_lib's): ``sklearn.ensemble.GradientBoostingClassifier()`` with its
    defaults (100 stages of depth-3 trees, learning rate 0.1), :math:`R_{jk}` its ``feature_importances_``
    (impurity decrease; unchanged when a code is rescaled). ``regressor="lasso"`` is a variant closer to Eastwood
    & Williams' lasso: codes standardised by the training rows, an L1 ``LogisticRegression`` (saga,
    :math:`C = 1`), :math:`R_{jk} = \sum_c \lvert w_{cj} \rvert` over the classes' weight vectors. Its numbers are
    not comparable with the GBT ones (nor with disentanglement_lib's).

    Cost: the GBT fits dominate, one tree per class and stage: on one core, 10,000 training rows of 10 codes take
    about 3 minutes for 5 factors of 10 values and 6 minutes for dSprites' 3, 6, 40, 32 and 32 values (the lasso
    variant: about 2 seconds).

    :param codes: ``(N, D)`` codes (encoder means). :param factors: ``(N, K)`` integer factor classes; each must
        take at least two values in the training rows.
    :param num_train: training rows (disentanglement_lib: 10,000). :param num_test: test rows (5,000); the two are
        disjoint, so ``num_train + num_test`` must not exceed :math:`N`.
    :param regressor: ``"gbt"`` or ``"lasso"``.
    :param seed: seeds the rows and the classifiers. :param factor_names: names of the columns of ``factors``.
    :returns: ``{"disentanglement", "completeness", "informativeness_train", "informativeness_test": float,
        "importance": (D, K) array, "factors": [names]}``.
    """
    what = "dci"
    codes, factors, names = _codes_and_factors(codes, factors, factor_names, what)
    if regressor not in ("gbt", "lasso"):
        raise ValueError(f"{what}: regressor must be 'gbt' or 'lasso', got {regressor!r}")
    n, d = codes.shape
    k_total = factors.shape[1]
    if k_total < 2 or d < 2:
        raise ValueError(
            f"{what} needs at least two factors and two code dimensions (its entropies are in base K and D); "
            f"got K={k_total}, D={d}"
        )
    rng = np.random.default_rng(seed)
    train, test = _split(n, num_train, num_test, rng, what)
    _require_varying(factors[train], names, what, f"the {num_train} training rows")
    state = _sklearn_seed(rng)
    x_train, x_test = codes[train], codes[test]
    if regressor == "lasso":
        x_train, x_test = _standardise(x_train, x_test)
    importance = np.zeros((d, k_total))
    acc_train, acc_test = np.empty(k_total), np.empty(k_total)

    def fit(k: int):
        model = GradientBoostingClassifier(random_state=state) if regressor == "gbt" else _l1_logistic(state)
        return model.fit(x_train, factors[train, k])

    # one classifier per factor, independent and seeded alike: fitted on as many threads as torch uses (scikit-learn's
    # tree building releases the GIL), which divides DCI's cost, the trees, by the core count. Warning filters are
    # process-wide, so they are set around the threads, not in them.
    workers = max(1, min(k_total, torch.get_num_threads()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        models = Parallel(n_jobs=workers, prefer="threads")(delayed(fit)(k) for k in range(k_total))
    for k, model in enumerate(models):
        y_train, y_test = factors[train, k], factors[test, k]
        if regressor == "gbt":
            importance[:, k] = np.abs(model.feature_importances_)
        else:
            importance[:, k] = np.abs(model.coef_).sum(0)
        acc_train[k] = np.mean(model.predict(x_train) == y_train)
        acc_test[k] = np.mean(model.predict(x_test) == y_test)
    disentanglement, completeness = _dci_from_importance(importance)
    return {
        "disentanglement": disentanglement,
        "completeness": completeness,
        "informativeness_train": float(acc_train.mean()),
        "informativeness_test": float(acc_test.mean()),
        "importance": importance,
        "factors": names,
    }


# --- SAP -------------------------------------------------------------------------------------------------------------


def _top_two_gap(score_matrix: np.ndarray) -> np.ndarray:
    """Per factor (column), the largest entry minus the second largest."""
    top = np.sort(score_matrix, axis=0)
    return top[-1] - top[-2]


def sap(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    num_train: int = 10000,
    num_test: int = 5000,
    seed: int = 0,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""The SAP score of Kumar et al. (2018, section 3) for discrete factors, as in disentanglement_lib.

    Entry :math:`S_{jk}` of the score matrix :math:`S \in [0, 1]^{D \times K}` is the test accuracy of a linear
    classifier that predicts factor :math:`k` from code dimension :math:`j` alone, and

    .. math::

        \mathrm{SAP} = \frac{1}{K} \sum_{k=1}^{K} \Big( S_{j^{(k)} k} - \max_{j \ne j^{(k)}} S_{jk} \Big),
        \qquad j^{(k)} = \operatorname{argmax}_j S_{jk},

    high when every factor is predictable from one code and from no other. Two codes that both carry a factor give
    it a gap of 0.

    Conventions (disentanglement_lib's discrete branch): the classifier is ``sklearn.svm.LinearSVC(C=0.01,
    class_weight="balanced")`` (one-vs-rest, squared hinge, the intercept penalised with the weight), fit on
    ``num_train`` rows and scored on ``num_test`` other rows; codes are not rescaled. The solver is chosen with
    ``dual="auto"`` (the primal problem for one feature), the optimum disentanglement_lib's dual solver also
    approaches. On one code, a one-vs-rest linear classifier separates two classes by a threshold but often misses
    the middle values of an ordered factor with more, so SAP on factors with many values is small even for a
    perfect code. Because :math:`C` penalises the weight,
    rescaling a code changes :math:`S` only through the regularisation, which matters little with thousands of
    training rows.

    :param codes: ``(N, D)`` codes, :math:`D \ge 2`. :param factors: ``(N, K)`` integer factor classes.
    :param num_train: training rows (10,000). :param num_test: test rows (5,000), disjoint from them.
    :param seed: seeds the rows and the classifiers. :param factor_names: names of the columns of ``factors``.
    :returns: ``{"sap": float, "score_matrix": (D, K) array, "factors": [names]}``.
    """
    what = "sap"
    codes, factors, names = _codes_and_factors(codes, factors, factor_names, what)
    n, d = codes.shape
    if d < 2:
        raise ValueError(f"{what} is a gap between the two best code dimensions, so it needs D >= 2, got D={d}")
    rng = np.random.default_rng(seed)
    train, test = _split(n, num_train, num_test, rng, what)
    _require_varying(factors[train], names, what, f"the {num_train} training rows")
    state = _sklearn_seed(rng)
    score_matrix = np.empty((d, factors.shape[1]))
    for j in range(d):
        x_train, x_test = codes[train, j : j + 1], codes[test, j : j + 1]
        for k in range(factors.shape[1]):
            svc = LinearSVC(C=0.01, class_weight="balanced", dual="auto", random_state=state)
            svc = _quiet_fit(svc, x_train, factors[train, k])
            score_matrix[j, k] = np.mean(svc.predict(x_test) == factors[test, k])
    return {"sap": float(_top_two_gap(score_matrix).mean()), "score_matrix": score_matrix, "factors": names}


# --- modularity and explicitness -------------------------------------------------------------------------------------


def _modularity(mutual_info: np.ndarray) -> np.ndarray:
    """Modularity of each code from a ``(D, K)`` mutual-information matrix; a code with no information scores 0."""
    squared = mutual_info**2
    top = squared.max(1)
    rest = squared.sum(1) - top
    informative = top > 0
    out = np.zeros(len(mutual_info))
    out[informative] = 1.0 - rest[informative] / (top[informative] * (squared.shape[1] - 1))
    return out


def _mean_auc(classes: np.ndarray, proba: np.ndarray, y: np.ndarray, what: str, rows: str) -> float:
    """Mean one-vs-rest ROC AUC over the values with both positive and negative rows."""
    onehot = y[:, None] == classes[None]
    scored = [c for c in range(len(classes)) if 0 < onehot[:, c].sum() < len(y)]
    if not scored:
        raise ValueError(f"{what}: the {rows} rows hold a single value of a factor, so no ROC AUC exists; draw more")
    return float(np.mean([roc_auc_score(onehot[:, c], proba[:, c]) for c in scored]))


def modularity_explicitness(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    num_train: int = 10000,
    num_test: int = 5000,
    num_bins: int = 20,
    seed: int = 0,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""Modularity and explicitness of Ridgeway & Mozer (2018, section 3), as in disentanglement_lib.

    **Modularity.** Each code dimension of the ``num_train`` training rows is cut into ``num_bins`` equal-width
    bins over its range (disentanglement_lib's histogram discretiser, as in
    :func:`~untwine.metrics.mutual_info_gap.discrete_mig`), and :math:`m_{jk}` is the plug-in mutual information (nats,
    ``sklearn.metrics.mutual_info_score``) between binned code :math:`j` and factor :math:`k`. With
    :math:`k^\star_j = \operatorname{argmax}_k m_{jk}`,

    .. math::

        \mathrm{modularity} = \frac{1}{D} \sum_{j=1}^{D} \Big( 1 - \frac{\sum_{k \ne k^\star_j} m_{jk}^2}
            {(K - 1)\, m_{jk^\star_j}^2} \Big),

    1 when every code informs about one factor only. A code with no information about any factor
    (:math:`m_{j\cdot} = 0`, e.g. a constant one) scores 0 and still counts in the mean, as in
    disentanglement_lib. Modularity does not ask codes to be informative: noise codes score well above 0.

    **Explicitness.** For each factor, a one-vs-rest logistic regression on all codes (standardised by the
    training rows' mean and standard deviation, as disentanglement_lib does; a constant code is only centred) gives
    class probabilities, and explicitness is the ROC AUC of each value against the rest, averaged over values and
    then over factors, on the training and on the test rows:

    .. math::

        \mathrm{explicitness} = \frac{1}{K} \sum_{k=1}^{K} \frac{1}{|V_k|} \sum_{v \in V_k}
            \mathrm{AUC}\big(\mathbb{1}[v_k = v],\ \hat p(v_k = v \mid z)\big).

    The classifier is what disentanglement_lib's ``LogisticRegression()`` was under the scikit-learn of its time:
    liblinear, one-vs-rest, L2 with :math:`C = 1` (the intercept penalised too). A value absent from the evaluated
    rows (or the only value there) has no AUC and is left out of that mean. Chance level is 0.5.

    :param codes: ``(N, D)`` codes. :param factors: ``(N, K)`` integer factor classes, :math:`K \ge 2`.
    :param num_train: training rows (10,000), for the mutual information and the classifiers.
    :param num_test: test rows (5,000), disjoint from them.
    :param num_bins: histogram bins per code dimension (20).
    :param seed: seeds the rows and the classifiers. :param factor_names: names of the columns of ``factors``.
    :returns: ``{"modularity", "explicitness_train", "explicitness_test": float, "mutual_info": (D, K) array,
        "factors": [names]}``.
    """
    what = "modularity_explicitness"
    codes, factors, names = _codes_and_factors(codes, factors, factor_names, what)
    if int(num_bins) != num_bins or num_bins < 1:
        raise ValueError(f"{what}: num_bins must be a positive integer, got {num_bins!r}")
    n, d = codes.shape
    k_total = factors.shape[1]
    if k_total < 2:
        raise ValueError(f"{what}: modularity compares a code's information across factors, so it needs K >= 2")
    rng = np.random.default_rng(seed)
    train, test = _split(n, num_train, num_test, rng, what)
    _require_varying(factors[train], names, what, f"the {num_train} training rows")
    binned = _histogram_discretize(codes[train], num_bins)
    mutual_info = np.array(
        [[mutual_info_score(factors[train, k], binned[:, j]) for k in range(k_total)] for j in range(d)]
    )
    state = _sklearn_seed(rng)
    x_train, x_test = _standardise(codes[train], codes[test])
    auc_train, auc_test = np.empty(k_total), np.empty(k_total)
    for k in range(k_total):
        y_train, y_test = factors[train, k], factors[test, k]
        model = _quiet_fit(
            OneVsRestClassifier(LogisticRegression(solver="liblinear", random_state=state)), x_train, y_train
        )
        auc_train[k] = _mean_auc(model.classes_, model.predict_proba(x_train), y_train, what, "training")
        auc_test[k] = _mean_auc(model.classes_, model.predict_proba(x_test), y_test, what, "test")
    return {
        "modularity": float(_modularity(mutual_info).mean()),
        "explicitness_train": float(auc_train.mean()),
        "explicitness_test": float(auc_test.mean()),
        "mutual_info": mutual_info,
        "factors": names,
    }


# --- Gaussian total correlation ---------------------------------------------------------------------------------------


def gaussian_total_correlation(codes: np.ndarray | torch.Tensor) -> float:
    r"""Total correlation of the Gaussian fitted to the codes (disentanglement_lib's ``unsupervised_metrics``).

    With :math:`\Sigma` the sample covariance of the codes (``ddof=1``; the value does not depend on it), the total
    correlation of :math:`\mathcal{N}(\mu, \Sigma)` is its KL divergence from the product of its marginals,

    .. math::

        \mathrm{TC} = \mathrm{KL}\Big(\mathcal{N}(\mu, \Sigma) \,\Big\|\, \prod_j \mathcal{N}(\mu_j, \Sigma_{jj})\Big)
            = \frac12 \Big( \sum_{j=1}^{D} \log \Sigma_{jj} - \log \det \Sigma \Big)
            = -\frac12 \log \det \operatorname{corr}(\Sigma) \;\ge\; 0,

    0 exactly when :math:`\Sigma` is diagonal, unchanged when a code dimension is rescaled, and
    :math:`-\tfrac12 \log(1 - \rho^2)` for two codes of correlation :math:`\rho`. It is computed from the
    correlation matrix (a ``slogdet``, no matrix inverse), clamped at 0 against round-off, and infinite when the
    covariance is singular (e.g. two identical codes). Unsupervised: no factors are needed.
    disentanglement_lib uses 10,000 random images; the ``_of`` wrapper uses every image.

    :param codes: ``(N, D)`` codes, :math:`N \ge 2`, no constant dimension.
    :returns: the total correlation in nats.
    """
    what = "gaussian_total_correlation"
    codes = _codes(codes, what)
    cov = np.atleast_2d(np.cov(codes, rowvar=False))
    std = np.sqrt(np.diag(cov))
    if (std <= 0).any():
        raise ValueError(
            f"{what}: code dimensions {np.flatnonzero(std <= 0).tolist()} are constant, so their log-variance is "
            "undefined; drop them"
        )
    sign, logdet = np.linalg.slogdet(cov / np.outer(std, std))
    if sign <= 0:
        return float("inf")
    return float(max(-0.5 * logdet, 0.0))


# --- model-level wrappers ---------------------------------------------------------------------------------------------


def _choose_factors(factors: Sequence[str | int] | None, names: list[str], classes: np.ndarray, what: str) -> list[int]:
    """Positions of the factors to score: the named ones, else every factor that varies in the data."""
    sizes = [np.unique(classes[:, k]).size for k in range(classes.shape[1])]
    return _factor_indices(factors, names, sizes, None, what, "it does not vary in this dataset; leave it out")


def _encode_labelled(
    model: nn.Module,
    data,
    factors: Sequence[str | int] | None,
    encode_batch_size: int,
    device: torch.device | str | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Encoder means of every image, the chosen columns of ``data.targets`` and their names."""
    targets = data.targets
    if targets.dim() != 2 or targets.is_floating_point():
        raise ValueError(
            f"{what} needs (N, K) integer factor classes in data.targets, but {data.name} has targets of shape "
            f"{tuple(targets.shape)} ({targets.dtype}); use a FactorDataset or a dataset with one column per factor"
        )
    classes = targets.cpu().numpy()
    names = getattr(data, "factor_names", None)
    names = list(names) if names is not None else [f"factor_{k}" for k in range(classes.shape[1])]
    if len(names) != classes.shape[1]:
        raise ValueError(f"{what}: {data.name} names {len(names)} factors but its targets have {classes.shape[1]}")
    chosen = _choose_factors(factors, names, classes, what)
    loc, _ = encode_dataset(model, data, encode_batch_size, device)
    return loc.cpu().numpy(), classes[:, chosen], [names[k] for k in chosen]


def _score_of(score, model, data, factors, encode_batch_size, device, kwargs) -> dict:
    codes, classes, names = _encode_labelled(model, data, factors, encode_batch_size, device, score.__name__)
    return score(codes, classes, factor_names=names, **kwargs)


def beta_vae_score_of(model: nn.Module, data, factors=None, *, encode_batch_size=1024, device=None, **kwargs) -> dict:
    """:func:`beta_vae_score` of ``model``'s encoder means on ``data`` (``kwargs`` are its keyword arguments; the
    dataset and ``factors`` as for every ``_of`` wrapper, see the module docstring)."""
    return _score_of(beta_vae_score, model, data, factors, encode_batch_size, device, kwargs)


def factor_vae_score_of(model: nn.Module, data, factors=None, *, encode_batch_size=1024, device=None, **kwargs) -> dict:
    """:func:`factor_vae_score` of ``model``'s encoder means on ``data`` (``kwargs`` are its keyword arguments; the
    dataset and ``factors`` as for every ``_of`` wrapper, see the module docstring)."""
    return _score_of(factor_vae_score, model, data, factors, encode_batch_size, device, kwargs)


def dci_of(model: nn.Module, data, factors=None, *, encode_batch_size=1024, device=None, **kwargs) -> dict:
    """:func:`dci` of ``model``'s encoder means on ``data`` (``kwargs`` are its keyword arguments; the dataset and
    ``factors`` as for every ``_of`` wrapper, see the module docstring)."""
    return _score_of(dci, model, data, factors, encode_batch_size, device, kwargs)


def sap_of(model: nn.Module, data, factors=None, *, encode_batch_size=1024, device=None, **kwargs) -> dict:
    """:func:`sap` of ``model``'s encoder means on ``data`` (``kwargs`` are its keyword arguments; the dataset and
    ``factors`` as for every ``_of`` wrapper, see the module docstring)."""
    return _score_of(sap, model, data, factors, encode_batch_size, device, kwargs)


def modularity_explicitness_of(
    model: nn.Module, data, factors=None, *, encode_batch_size=1024, device=None, **kwargs
) -> dict:
    """:func:`modularity_explicitness` of ``model``'s encoder means on ``data`` (``kwargs`` are its keyword
    arguments; the dataset and ``factors`` as for every ``_of`` wrapper, see the module docstring)."""
    return _score_of(modularity_explicitness, model, data, factors, encode_batch_size, device, kwargs)


@torch.no_grad()
def gaussian_total_correlation_of(
    model: nn.Module, data, encode_batch_size: int = 1024, device: torch.device | str | None = None
) -> float:
    """:func:`gaussian_total_correlation` of ``model``'s encoder means on every image of ``data`` (any
    :class:`~untwine.data.base.ImageDataset`: no factors are needed)."""
    loc, _ = encode_dataset(model, data, encode_batch_size, device)
    return gaussian_total_correlation(loc)
