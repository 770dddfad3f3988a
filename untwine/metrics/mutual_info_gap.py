r"""Mutual information gap (MIG), as named estimators whose numbers are not comparable with each other.

Chen et al. (2018), "Measuring disentanglement" (eq. 1 of the β-TCVAE poster; used by the ISA-VAE paper, section 4),
define for latent dimensions :math:`z_j` and ground-truth factors :math:`v_k`

.. math::

    \mathrm{MIG} = \frac{1}{K} \sum_{k=1}^K \frac{1}{H(v_k)}
        \Big( I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} I(z_j; v_k) \Big),
    \qquad j^{(k)} = \operatorname{argmax}_j I(z_j; v_k).

How :math:`I(z_j; v_k)` is estimated changes the number a model gets, so the field's figures are only comparable
within one estimator:

* :func:`sampling_mig` is Chen et al.'s own estimator (``mutual_info_metric_shapes`` in their code): entropies of
  the stochastic code under the aggregate posterior, by Monte Carlo over the whole factor grid. This is the number
  the β-TCVAE and ISA-VAE papers report.
* :func:`discrete_mig` is disentanglement_lib's ``discrete_mig`` (Locatello et al. 2019): encoder means
  histogram-discretised, plug-in discrete mutual information.
* :func:`labelled_sampling_mig` is Chen et al.'s estimator on labelled images without a full grid (a random subset
  of one, a labelled dataset): each value weighs by its frequency and the normaliser is the labels' empirical
  entropy; on a full grid it equals :func:`sampling_mig`.

Each estimator works on codes (posterior parameters, or encoder means) and ground-truth factors; its ``_of`` variant
(:func:`sampling_mig_of`, :func:`discrete_mig_of`, :func:`labelled_sampling_mig_of`) takes a model and a
:class:`~untwine.data.base.FactorDataset` (any dataset with ``(N, K)`` factor classes for the labelled one), encodes
the images and calls it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import mutual_info_score
from torch import nn

from untwine.data.base import FactorDataset, ImageDataset, LabelledFactors
from untwine.metrics.mixture import full_aggregate_log_density
from untwine.metrics.utils import encode_dataset, model_device, random_subset

#: dSprites factors scored by Chen et al. and the ISA-VAE paper (shape is left out: it is categorical).
DSPRITES_MIG_FACTORS = ("scale", "orientation", "posX", "posY")


def _factor_indices(
    factors: Sequence[str | int] | None,
    names: Sequence[str],
    sizes: Sequence[int],
    default: Sequence[str] | None,
    what: str = "MIG",
    single: str = "its entropy is 0 and MIG cannot normalise",
) -> list[int]:
    """Positions of the scored factors: the given ones, else ``default`` names, else every non-constant factor.

    :param what: the score, named in the errors. :param single: why a factor with one value cannot be scored.
    """
    if factors is None:
        if default is not None:
            chosen = [names.index(n) for n in default if n in names and sizes[names.index(n)] > 1]
        else:
            chosen = [k for k, s in enumerate(sizes) if s > 1]
        if not chosen:
            raise ValueError(f"{what}: no factor has more than one value (sizes {tuple(sizes)}); nothing to score")
        return chosen
    if isinstance(factors, (str, int)):
        factors = [factors]
    chosen = []
    for f in factors:
        if isinstance(f, str):
            if f not in names:
                raise ValueError(f"{what}: unknown factor {f!r}; factors are {', '.join(names)}")
            k = list(names).index(f)
        else:
            k = int(f)
            if not 0 <= k < len(sizes):
                raise ValueError(f"{what}: factor index {k} out of range for {len(sizes)} factors")
        if sizes[k] < 2:
            raise ValueError(f"{what}: factor {names[k]!r} takes a single value: {single}")
        chosen.append(k)
    if not chosen:
        raise ValueError(f"{what}: factors is empty; name at least one factor")
    return chosen


def _gaps(normalised: np.ndarray) -> np.ndarray:
    """Largest minus second largest entry of each row (the largest itself when there is one column)."""
    top = -np.sort(-normalised, axis=1)
    return top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)


def _result(normalised: np.ndarray, names: list[str]) -> dict:
    gaps = _gaps(normalised)
    return {
        "mig": float(gaps.mean()),
        "per_factor": {name: float(g) for name, g in zip(names, gaps)},
        "mutual_info": normalised,
        "factors": names,
    }


def _mixture_terms(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    num_samples: int,
    generator: torch.Generator,
    chunk_elements: int | None,
    groups: Sequence[Sequence[int]] | None = None,
) -> torch.Tensor:
    r"""Per-code terms :math:`-\log q(z_{sj})` of each group's aggregate posterior, ``(G, S, D)`` float64.

    Group :math:`g` holds :math:`M` posteriors and one code sample per posterior; ``num_samples`` of those samples
    (without replacement, all of them when ``num_samples >= M``) estimate
    :math:`H(z_j) = -\mathbb{E}\log q(z_j)` as the mean over :math:`S` of these terms, each scored against all
    :math:`M` components.
    """
    g, m, d = z.shape
    if num_samples < m:
        pick = torch.stack([random_subset(m, num_samples, generator) for _ in range(g)])
        pick = pick.to(z.device).unsqueeze(-1).expand(-1, -1, d)
        z = torch.gather(z, 1, pick)
    _, log_q = full_aggregate_log_density(z, loc, scale, joint=False, chunk_elements=chunk_elements, groups=groups)
    return -log_q.double()


def _gap_stderr(
    normalised: np.ndarray, log_sizes: Sequence[float], marginal: torch.Tensor, conditional: list[torch.Tensor]
) -> tuple[float, np.ndarray]:
    """Monte Carlo standard errors of the MIG and of each factor's gap (formula in :func:`sampling_mig`)."""
    k_total, h = normalised.shape
    order = np.argsort(-normalised, axis=1, kind="stable")
    # w[k] picks the gap's two columns, scaled by 1 / H(v_k); a column whose MI was clamped to 0 is a constant.
    w = torch.zeros(k_total, h, dtype=torch.float64, device=marginal.device)
    for k in range(k_total):
        if normalised[k, order[k, 0]] > 0:
            w[k, order[k, 0]] = 1.0 / log_sizes[k]
        if h > 1 and normalised[k, order[k, 1]] > 0:
            w[k, order[k, 1]] = -1.0 / log_sizes[k]
    d_marg = marginal @ w.T  # (S, K): each code's share of every gap, on the same code
    var_marg = d_marg.var(0) / len(d_marg)
    var_mig = (d_marg.mean(1).var() / len(d_marg)).item()
    var_cond = torch.empty(k_total, dtype=torch.float64, device=marginal.device)
    for k, terms in enumerate(conditional):
        per_value = (terms @ w[k]).var(1) / terms.shape[1]  # (V,): each value's mean over its own codes
        var_cond[k] = per_value.sum() / terms.shape[0] ** 2
    per_factor = (var_marg + var_cond).sqrt().cpu().numpy()
    var_mig += var_cond.sum().item() / k_total**2
    return math.sqrt(var_mig), per_factor


@torch.no_grad()
def sampling_mig(
    loc: torch.Tensor,
    scale: torch.Tensor,
    factor_sizes: Sequence[int],
    factors: Sequence[str | int] | None = None,
    factor_names: Sequence[str] | None = None,
    num_samples: int = 10000,
    seed: int = 0,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    return_samples: bool = False,
) -> dict:
    r"""Chen et al.'s sampling MIG from diagonal-Gaussian posteriors over a full factor grid.

    ``loc``/``scale`` ``(N, D)`` are the posteriors of the :math:`N = \prod_k |V_k|` images in row-major grid order
    (last factor fastest, as :class:`~untwine.data.base.FactorDataset` stores them). One code
    :math:`z_n \sim q(z \mid x_n)` is drawn per image, and with :math:`q(z) = \frac{1}{N}\sum_n q(z \mid x_n)` and
    :math:`q(z \mid v_k = v)` the same mixture restricted to the images with :math:`v_k = v`:

    .. math::

        H(z_j) &= -\mathbb{E}_{q(z)} \log q(z_j), \qquad
        H(z_j \mid v_k) = \frac{1}{|V_k|} \sum_{v \in V_k} -\mathbb{E}_{q(z \mid v_k = v)} \log q(z_j \mid v_k = v), \\
        I(z_j; v_k) &= H(z_j) - H(z_j \mid v_k), \qquad
        \mathrm{MIG}_k = \frac{I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} I(z_j; v_k)}{\log |V_k|} .

    Each expectation averages ``num_samples`` codes of the (restricted) dataset, and each density is the exact
    mixture over all its components (logsumexp over :math:`N` or :math:`N / |V_k|` posteriors), as in Chen et al.'s
    ``estimate_entropies``. Factors are uniform on the grid, so :math:`H(v_k) = \log |V_k|`. Estimated mutual
    informations are clamped at 0 before normalising, as in their ``compute_metric_shapes`` (a near-independent
    pair can come out slightly negative).

    **Grouped by subspaces.** With ``groups`` (e.g. ``model.subspaces()`` of an ISA-VAE, whose prior makes groups
    of coordinates, not coordinates, independent), each :math:`z_j` above is replaced by a group
    :math:`z_{\mathcal{V}_g}` and its joint entropy under the same mixtures: the gap is then between the two
    *subspaces* most informative about a factor. This is the "MIG grouped by subspaces" the ISA-VAE paper reports
    beside the ordinary MIG; with one coordinate per group it is the ordinary MIG.

    **Standard error.** When ``num_samples`` :math:`= S < N`, the result carries a Monte Carlo standard error: the
    spread of the estimate over seeds (codes and subsets drawn again). Write :math:`f_{sj} = -\log q(z_{sj})` for the
    :math:`S` marginal codes and :math:`g^{(kv)}_{sj} = -\log q(z_{sj} \mid v_k = v)` for the :math:`S_{kv}` codes of
    value :math:`v`, so that :math:`\hat H(z_j) = \bar f_{\cdot j}` and :math:`\hat H(z_j \mid v_k) =
    \frac{1}{|V_k|}\sum_v \bar g^{(kv)}_{\cdot j}`. With the gap's two columns :math:`a = j^{(k)}` and :math:`b` the
    runner-up (held fixed, as in the delta method) the gap is a difference of two columns on the same codes, and the
    marginal and per-value subsets are drawn independently, so

    .. math::

        \operatorname{Var}(\widehat{\mathrm{MIG}}_k) &= \frac{1}{\log^2 |V_k|} \Big(
            \frac{\operatorname{var}_s(f_{sa} - f_{sb})}{S}
            + \frac{1}{|V_k|^2} \sum_{v \in V_k} \frac{\operatorname{var}_s(g^{(kv)}_{sa} - g^{(kv)}_{sb})}{S_{kv}}
            \Big), \\
        \operatorname{Var}(\widehat{\mathrm{MIG}}) &= \frac{\operatorname{var}_s\big(\frac{1}{K}\sum_k
            \frac{f_{sa_k} - f_{sb_k}}{\log |V_k|}\big)}{S}
            + \frac{1}{K^2} \sum_k \frac{1}{\log^2 |V_k|\,|V_k|^2}
            \sum_{v} \frac{\operatorname{var}_s(g^{(kv)}_{sa_k} - g^{(kv)}_{sb_k})}{S_{kv}},

    with sample variances :math:`\operatorname{var}_s` over the codes used; the factors share the marginal codes, so
    their marginal parts are combined per code before taking the variance. A column whose mutual information was
    clamped to 0 drops out (it is constant). This treats codes as independent draws from the aggregate posterior; it
    ignores the finite-population correction :math:`1 - S/M` of drawing images without replacement from a pool of
    :math:`M` (conservative: relative to the value on every code of the same draw the error is smaller) and the small
    overlap between the marginal and per-value subsets (a covariance of relative size :math:`S/N`).

    Cost: :math:`O(S N D)` for the marginal entropies and again for each scored factor (when its slices hold at
    least :math:`S` images), computed in blocks (see
    :func:`~untwine.metrics.mixture.full_aggregate_log_density`).

    :param factor_sizes: values per factor; their product must be :math:`N`.
    :param factors: names (or positions) of the factors to score; default every factor with more than one value.
    :param factor_names: names of all factors (default ``factor_0``, ``factor_1``, ...).
    :param num_samples: codes per entropy estimate (Chen et al.: 10,000).
    :param seed: seeds the code draws and subsets (a private generator).
    :param groups: lists of latent coordinates scored jointly (default: each coordinate alone).
    :param return_samples: also return the codes, one per image, under ``"samples"`` (``{"z": (N, D) array}``).
    :returns: ``{"mig": float, "per_factor": {name: float}, "mutual_info": (K, D) array of clamped
        I(z_j; v_k) / H(v_k) (``(K, number of groups)`` with ``groups``), "factors": [names], "stderr":
        {"mig": float, "per_factor": {name: float}} (``None`` when every code is used)}``.
    """
    sizes = tuple(int(s) for s in factor_sizes)
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(len(sizes))]
    if len(names) != len(sizes):
        raise ValueError(f"{len(names)} factor names for {len(sizes)} factor sizes")
    if loc.dim() != 2 or loc.shape != scale.shape:
        raise ValueError(f"loc and scale must both be (N, D); got {tuple(loc.shape)} and {tuple(scale.shape)}")
    n, d = loc.shape
    if math.prod(sizes) != n:
        raise ValueError(f"factor sizes {sizes} multiply to {math.prod(sizes)}, but there are {n} posteriors")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    chosen = _factor_indices(factors, names, sizes, None)

    gen = torch.Generator().manual_seed(seed)
    # One code per image, shared by the marginal and every conditional estimate (as Chen et al. do); drawn on the
    # CPU so a seed gives the same codes on every device.
    eps = torch.randn(n, d, generator=gen).to(device=loc.device, dtype=loc.dtype)
    z = loc + scale * eps

    marginal = _mixture_terms(z[None], loc[None], scale[None], num_samples, gen, chunk_elements, groups)[0]
    h_marginal = marginal.mean(0)
    h_cond = torch.empty(len(chosen), h_marginal.shape[0], dtype=torch.float64, device=loc.device)
    conditional = []
    for row, k in enumerate(chosen):
        # (V_k, N / V_k, D): the images of each value of factor k, in grid order.
        def by_value(t: torch.Tensor, k: int = k) -> torch.Tensor:
            return t.reshape(*sizes, d).movedim(k, 0).reshape(sizes[k], -1, d)

        terms = _mixture_terms(by_value(z), by_value(loc), by_value(scale), num_samples, gen, chunk_elements, groups)
        h_cond[row] = terms.mean(1).mean(0)
        conditional.append(terms)
    mutual_info = (h_marginal[None] - h_cond).clamp(min=0.0)
    log_sizes = torch.tensor([math.log(sizes[k]) for k in chosen], dtype=torch.float64, device=loc.device)
    normalised = (mutual_info / log_sizes[:, None]).cpu().numpy()
    names_chosen = [names[k] for k in chosen]
    out = _result(normalised, names_chosen)
    if num_samples < n:
        se_mig, se_factor = _gap_stderr(normalised, log_sizes.tolist(), marginal, conditional)
        out["stderr"] = {"mig": se_mig, "per_factor": {name: float(s) for name, s in zip(names_chosen, se_factor)}}
    else:
        out["stderr"] = None
    if return_samples:
        out["samples"] = {"z": z.cpu().numpy()}
    return out


def _default_factors(data: FactorDataset) -> Sequence[str] | None:
    return DSPRITES_MIG_FACTORS if data.name == "dsprites" else None


@torch.no_grad()
def sampling_mig_of(
    model: nn.Module,
    data: FactorDataset,
    factors: Sequence[str | int] | None = None,
    num_samples: int = 10000,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> dict:
    r"""Chen et al.'s MIG of ``model`` on a full factor grid (the estimator of the β-TCVAE and ISA-VAE papers).

    Encodes every image (eval mode) with ``model.encode(x) -> (loc, scale)`` and hands the posteriors to
    :func:`sampling_mig`, which documents the estimator.

    :param data: a :class:`~untwine.data.base.FactorDataset` (a full grid or sub-grid, e.g. dSprites).
    :param factors: factor names (or positions) to score. Default for dSprites: ``scale``, ``orientation``,
        ``posX``, ``posY`` (shape excluded, as Chen et al. and the ISA-VAE paper do; factors a sub-grid fixes to
        one value are dropped); for any other dataset every factor with more than one value.
    :param num_samples: codes per entropy estimate (Chen et al.: 10,000).
    :param device: where encoding and scoring run; the model must already be there (default: the model's device).
    :param groups: score groups of coordinates jointly, e.g. ``model.subspaces()`` for the ISA-VAE's "MIG grouped
        by subspaces" (see :func:`sampling_mig`).
    :returns: see :func:`sampling_mig`.
    """
    if not isinstance(data, FactorDataset):
        raise TypeError(f"MIG needs a FactorDataset (a full factor grid), got {type(data).__name__}")
    device = model_device(model, device)
    loc, scale = encode_dataset(model, data, batch_size, device)
    names = list(data.factor_names)
    chosen = _factor_indices(factors, names, data.factor_sizes, _default_factors(data))
    return sampling_mig(
        loc, scale, data.factor_sizes, chosen, names, num_samples, seed, chunk_elements=chunk_elements, groups=groups
    )


def mig(model: nn.Module, data: FactorDataset, *args, **kwargs) -> dict:
    """Alias of :func:`sampling_mig_of` kept for the README's example and the β-TCVAE notebook; same arguments."""
    return sampling_mig_of(model, data, *args, **kwargs)


@torch.no_grad()
def labelled_sampling_mig(
    loc: torch.Tensor,
    scale: torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    factor_names: Sequence[str] | None = None,
    num_samples: int = 10000,
    seed: int = 0,
    scored: Sequence[str | int] | None = None,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> dict:
    r"""Chen et al.'s sampling MIG from labelled images, without a full factor grid.

    :func:`sampling_mig` needs every cell of a product grid; here the images are any rows with known factor
    classes (a random subset of a grid, a labelled dataset), and each factor value :math:`v` of factor :math:`k`
    weighs as often as it occurs. With :math:`n_v` the images whose factor :math:`k` is :math:`v`,
    :math:`p(v) = n_v / N`, :math:`q(z \mid v_k = v) = \frac{1}{n_v} \sum_{n : v_{nk} = v} q(z \mid x_n)` (whatever
    :math:`n_v` is) and one code :math:`z_n \sim q(z \mid x_n)` per image,

    .. math::

        H(z_j \mid v_k) = \sum_{v} p(v)\, \Big(-\mathbb{E}_{q(z \mid v_k = v)} \log q(z_j \mid v_k = v)\Big),
        \qquad
        \mathrm{MIG}_k = \frac{I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} I(z_j; v_k)}{H(v_k)},
        \qquad H(v_k) = -\sum_v p(v) \log p(v),

    with :math:`H(z_j)` and :math:`I(z_j; v_k) = H(z_j) - H(z_j \mid v_k)` (clamped at 0) as in
    :func:`sampling_mig`: each expectation averages ``min(num_samples, n)`` of the codes of its mixture's images,
    drawn without replacement, scored against all of its components. The normaliser is the empirical entropy of the
    labels, not :math:`\log |V_k|`, so a factor with rare values is scored against the information it has.

    **Equal to** :func:`sampling_mig` on a full grid with every image present in row-major order (as a
    :class:`~untwine.data.base.FactorDataset` stores it): then :math:`p(v) = 1/|V_k|`, :math:`H(v_k) = \log |V_k|`,
    each value's images are the grid's slice in the same order, and the same ``seed`` draws the same codes and the
    same subsets, so the two agree up to float rounding.

    No standard error is given (values of unequal sizes): use :func:`sampling_mig` on a grid for one.

    :param loc: posterior means ``(N, D)``. :param scale: posterior scales ``(N, D)``.
    :param factors: ``(N, K)`` integer factor classes of the same images (``data.targets``).
    :param factor_names: names of the factor columns (default ``factor_0``, ...).
    :param num_samples: codes per entropy estimate (Chen et al.: 10,000).
    :param seed: seeds the code draws and subsets (a private generator).
    :param scored: names (or positions) of the factors to score; default every factor with more than one value.
    :param groups: lists of latent coordinates scored jointly (see :func:`sampling_mig`).
    :returns: ``{"mig": float, "per_factor": {name: float}, "mutual_info": (K, D) array of clamped
        I(z_j; v_k) / H(v_k), "factors": [names]}``.
    """
    if loc.dim() != 2 or loc.shape != scale.shape:
        raise ValueError(f"loc and scale must both be (N, D); got {tuple(loc.shape)} and {tuple(scale.shape)}")
    labels = factors.detach().cpu().numpy() if isinstance(factors, torch.Tensor) else np.asarray(factors)
    n, d = loc.shape
    if labels.ndim != 2 or len(labels) != n:
        raise ValueError(
            f"factors must be (N, K) factor classes for the {n} posteriors, got shape {labels.shape}; give one column "
            "per factor"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"factors must be integer factor classes, got dtype {labels.dtype}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(labels.shape[1])]
    if len(names) != labels.shape[1]:
        raise ValueError(f"{len(names)} factor names for {labels.shape[1]} factor columns")
    sizes = [np.unique(labels[:, k]).size for k in range(labels.shape[1])]
    chosen = _factor_indices(scored, names, sizes, None)

    gen = torch.Generator().manual_seed(seed)
    # The same draws, in the same order, as sampling_mig: codes, the marginal subset, then each value's subset.
    eps = torch.randn(n, d, generator=gen).to(device=loc.device, dtype=loc.dtype)
    z = loc + scale * eps
    h_marginal = _mixture_terms(z[None], loc[None], scale[None], num_samples, gen, chunk_elements, groups)[0].mean(0)
    h_cond = torch.zeros(len(chosen), h_marginal.shape[0], dtype=torch.float64, device=loc.device)
    entropy = torch.empty(len(chosen), dtype=torch.float64, device=loc.device)
    for row, k in enumerate(chosen):
        _, inverse, counts = np.unique(labels[:, k], return_inverse=True, return_counts=True)
        p = counts / n
        entropy[row] = float(-(p * np.log(p)).sum())
        # each value's images in row order: on a row-major grid, the slice sampling_mig takes
        by_value = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
        for p_v, rows in zip(p, by_value):
            rows = torch.as_tensor(rows, device=loc.device)
            terms = _mixture_terms(
                z[rows][None], loc[rows][None], scale[rows][None], num_samples, gen, chunk_elements, groups
            )
            h_cond[row] += p_v * terms[0].mean(0)
    mutual_info = (h_marginal[None] - h_cond).clamp(min=0.0)
    return _result((mutual_info / entropy[:, None]).cpu().numpy(), [names[k] for k in chosen])


@torch.no_grad()
def labelled_sampling_mig_of(
    model: nn.Module,
    data: ImageDataset,
    factors: Sequence[str | int] | None = None,
    num_samples: int = 10000,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
) -> dict:
    """:func:`labelled_sampling_mig` of ``model`` on labelled images: a full grid or any rows with factor classes.

    ``data.targets`` must be ``(N, K)`` integer factor classes (``data.factor_names`` names them, if present); a
    :class:`~untwine.data.base.FactorDataset` qualifies, and so does a random subset of one given its names.
    Every image is encoded (eval mode, ``batch_size`` at a time).

    :param factors: factor names (or positions) to score; defaults as in :func:`sampling_mig_of` (dSprites: its
        four continuous factors; otherwise every factor that takes more than one value in ``data``).
    :returns: see :func:`labelled_sampling_mig`.
    """
    targets = data.targets
    if targets.dim() != 2 or targets.is_floating_point():
        raise ValueError(
            f"the labelled MIG needs (N, K) integer factor classes in data.targets, but {data.name} has targets of "
            f"shape {tuple(targets.shape)} ({targets.dtype}); use a FactorDataset or a dataset with one column per "
            "factor"
        )
    labels = targets.cpu().numpy()
    names = getattr(data, "factor_names", None)
    names = list(names) if names is not None else [f"factor_{k}" for k in range(labels.shape[1])]
    if len(names) != labels.shape[1]:
        raise ValueError(f"{data.name} names {len(names)} factors but its targets have {labels.shape[1]} columns")
    sizes = [np.unique(labels[:, k]).size for k in range(labels.shape[1])]
    chosen = _factor_indices(factors, names, sizes, _default_factors(data))
    loc, scale = encode_dataset(model, data, batch_size, model_device(model, device))
    return labelled_sampling_mig(loc, scale, labels, names, num_samples, seed, chosen, chunk_elements, groups)


def _histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each column into ``num_bins`` equal-width bins over its own range, as disentanglement_lib does.

    ``np.digitize`` against the left edges gives labels 1..num_bins (the maximum falls in the last bin).
    """
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram(codes[:, j], num_bins)[1]
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def discrete_mig(
    codes: np.ndarray | torch.Tensor,
    factors: np.ndarray | torch.Tensor,
    num_bins: int = 20,
    factor_names: Sequence[str] | None = None,
) -> dict:
    r"""disentanglement_lib's ``discrete_mig`` (Locatello et al. 2019) from codes and discrete factors.

    Each code dimension is cut into ``num_bins`` equal-width bins over its own range (``np.histogram`` edges,
    ``np.digitize``), giving :math:`\tilde z_j`, and with plug-in (empirical) discrete entropies and mutual
    informations in nats (``sklearn.metrics.mutual_info_score``)

    .. math::

        \mathrm{MIG}_k = \frac{\hat I(\tilde z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} \hat I(\tilde z_j; v_k)}
            {\hat H(v_k)}, \qquad \hat H(v_k) = \hat I(v_k; v_k),

    averaged over factors. Unlike :func:`sampling_mig` nothing is clamped, the code is the encoder mean, and the
    factor entropy is the empirical one of the given rows.

    :param codes: ``(N, D)`` codes (usually encoder means).
    :param factors: ``(N, K)`` factor classes (any integer labels).
    :param num_bins: histogram bins per code dimension (disentanglement_lib: 20).
    :param factor_names: one name per column of ``factors`` (default ``factor_0``, ...).
    :returns: ``{"mig", "per_factor", "mutual_info" (K, D) array of I / H(v_k), "factors"}``.
    """
    codes = codes.detach().cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    factors = factors.detach().cpu().numpy() if isinstance(factors, torch.Tensor) else np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors):
        raise ValueError(f"codes must be (N, D) and factors (N, K); got {codes.shape} and {factors.shape}")
    if len(codes) < 2:
        raise ValueError("discrete MIG needs at least two data points")
    if num_bins < 1:
        raise ValueError(f"num_bins must be positive, got {num_bins}")
    k_total, d = factors.shape[1], codes.shape[1]
    names = list(factor_names) if factor_names is not None else [f"factor_{k}" for k in range(k_total)]
    if len(names) != k_total:
        raise ValueError(f"{len(names)} factor names for {k_total} factor columns")
    binned = _histogram_discretize(codes, num_bins)
    entropy = np.array([mutual_info_score(factors[:, k], factors[:, k]) for k in range(k_total)])
    if np.any(entropy <= 0):
        constant = [names[k] for k in np.flatnonzero(entropy <= 0)]
        raise ValueError(f"factors {constant} take a single value in these rows; MIG cannot normalise by H = 0")
    mi = np.array([[mutual_info_score(factors[:, k], binned[:, j]) for j in range(d)] for k in range(k_total)])
    return _result(mi / entropy[:, None], names)


@torch.no_grad()
def discrete_mig_of(
    model: nn.Module,
    data: LabelledFactors,
    factors: Sequence[str | int] | None = None,
    num_samples: int | None = 10000,
    num_bins: int = 20,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict:
    """:func:`discrete_mig` of ``model``'s encoder means on ``data``, with disentanglement_lib's conventions.

    As in disentanglement_lib, ``num_samples`` images are drawn uniformly **with** replacement (seeded), and by
    default every factor with more than one value among these images is scored, which for dSprites **includes
    shape** (unlike :func:`sampling_mig_of`). Any labelled images work: a full grid or :class:`LabelledFactors`
    without one (the estimator never uses the grid). Pass ``factors`` to choose (e.g.
    :data:`DSPRITES_MIG_FACTORS`), ``num_samples=None`` to use every image once.

    :returns: see :func:`discrete_mig`.
    """
    if not isinstance(data, LabelledFactors):
        raise TypeError(f"discrete MIG needs ground-truth factors (a LabelledFactors), got {type(data).__name__}")
    names = list(data.factor_names)
    chosen = _factor_indices(factors, names, data.values_present(), None)
    if num_samples is None:
        index = torch.arange(len(data))
    else:
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")
        index = torch.randint(len(data), (num_samples,), generator=torch.Generator().manual_seed(seed))
    codes, _ = encode_dataset(model, data, batch_size, device, index=index)
    classes = data.factor_classes[index.to(data.factor_classes.device)][:, chosen]
    return discrete_mig(codes, classes, num_bins, [names[k] for k in chosen])
