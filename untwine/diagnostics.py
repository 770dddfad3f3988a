r"""Did the inference work? Importance-sampled :math:`\log p(x)`, Pareto :math:`\hat k` and ArviZ export for any
model/guide pair.

The guide :math:`q` is the proposal of an importance sampler for the marginal likelihood. For each unit (an image, or
a group of images sharing a global latent) and :math:`K` draws :math:`h_k \sim q(h \mid x)` of its latents,

.. math::

    \log w_k = \log p(x, h_k) - \log q(h_k \mid x), \qquad
    \log \hat p_K(x) = \log \frac{1}{K} \sum_{k=1}^{K} w_k \;\le\; \log p(x) \text{ in expectation},

the importance-weighted bound of Burda et al. (2016, eq. 8), which equals the ELBO at :math:`K = 1` and rises
towards :math:`\log p(x)` as :math:`K` grows. The right tail of the weights says whether the estimate can be trusted:
Pareto-smoothed importance sampling (Vehtari et al. 2024) fits a generalised Pareto distribution to the largest
weights, and its shape :math:`\hat k` is the diagnostic Yao et al. (2018) propose for variational inference: below 0.5
the weights have finite variance; above 0.7 the estimate (and the guide, as a proposal) is unreliable whatever
:math:`K`, and with :math:`K` draws above :math:`\min(1 - 1/\log_{10} K, 0.7)` (:func:`khat_threshold`: 0.5 at
:math:`K = 100`). The smoothing and :math:`\hat k` are ArviZ's (:func:`arviz.psislw`), not re-implemented here.

How the weights are read: the guide is traced and the model replayed against it (as the ELBOs do), all under a
vectorised plate of :math:`K` particles to the left of the model's plates, with **unscaled** log-densities, so a
training-time β or KL weight never enters. Discrete sites the guide marks ``infer={"enumerate": "parallel"}`` (UG-VAE's
cluster, N-VAE's unknown class) are summed out exactly in the model, :math:`\log \sum_d p(d) p(\cdot \mid d)`, and their
guide factor is dropped, which is valid because no later guide site reads them (checked). Guide factors
(``pyro.factor`` in a guide, N-VAE's classifier term) are terms of a training objective, not of :math:`q`, and are
ignored; model factors belong to :math:`p` and count. The unit is the outermost plate of the observed site: an image
(plate ``"data"``), or a group for a model with a global latent (plate ``"groups"``, one weight per group, since
:math:`\beta` and the images it explains must be scored together).

Images are passed without labels (``y=None``), so :math:`\log p(x)` marginalises a class the model could be told
(N-VAE); ``labels=True`` gives :math:`\log p(x \mid y)` for a conditional model instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from untwine.data.base import ImageDataset
from untwine.metrics.utils import eval_mode, model_device, seeded
from untwine.pyro_models.base import ClassPosterior, GlobalLatent, Model

with warnings.catch_warnings():
    # ArviZ 0.x announces its 1.x refactor on import; untwine is written against the 0.x InferenceData API
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

#: :math:`\hat k` above which an importance estimate is unreliable (Vehtari et al. 2024, sec. 3)
KHAT_BAD = 0.7
#: :math:`\hat k` below which the weights have finite variance
KHAT_GOOD = 0.5
#: log weights that agree to within this many nats are equal up to floating-point rounding
FLAT_WEIGHTS = 1e-6


class DiagnosticError(ValueError):
    """A model/guide pair whose traces cannot be read as an importance sampler (what is wrong and what to do)."""


@dataclass
class ImportanceResult:
    """Log importance weights of every unit and what is computed from them.

    :ivar log_weights: :math:`\\log w_{uk}`, ``(U, K)``, float64.
    :ivar index: image positions in the dataset, ``(U, group_size)``: unit ``u`` scores images ``index[u]``.
    :ivar iwae: :math:`\\log \\frac1K \\sum_k w_{uk}` per unit ``(U,)`` (nats per unit, not per image).
    :ivar psis: the same mean over Pareto-smoothed weights ``(U,)``.
    :ivar khat: Pareto shape :math:`\\hat k` of each unit's weights ``(U,)``; ``-inf`` where all weights are equal
        (a proposal equal to the posterior leaves no tail to fit).
    """

    log_weights: np.ndarray
    index: np.ndarray
    iwae: np.ndarray
    psis: np.ndarray
    khat: np.ndarray

    @property
    def group_size(self) -> int:
        return int(self.index.shape[1])

    @property
    def num_samples(self) -> int:
        return int(self.log_weights.shape[1])

    def per_image(self) -> np.ndarray:
        """The bound of each unit in nats per image (a group's value divided by its size), ``(U,)``."""
        return self.iwae / self.group_size

    def summary(self) -> dict[str, Any]:
        """``log_px``: the bound per image (``iwae``), ``se``, the Pareto-smoothed estimate (``psis``), ``K``, the
        number of units and images; ``khat``: median, 90th percentile (nearest rank; ``±inf`` where units had no tail
        to fit), shares above 0.5, 0.7 and above :func:`khat_threshold` of ``K`` with that threshold, and the share
        without a fitted tail.

        ``se`` is the standard error of the mean over units (how much the average would move with other held-out
        images), not the Monte Carlo error of each unit's estimate; :math:`\\hat k` speaks to the latter."""
        per_image = self.per_image()
        units = len(per_image)
        se = float(per_image.std(ddof=1) / math.sqrt(units)) if units > 1 else math.nan
        log_px = {
            "iwae": float(per_image.mean()),
            "se": se,
            "psis": float((self.psis / self.group_size).mean()),
            "num_samples": self.num_samples,
            "units": units,
            "images": units * self.group_size,
            "unit": "group" if self.group_size > 1 else "image",
        }
        # nearest-rank quantiles: k-hat is -inf (flat weights) or inf (no tail fitted) for some units
        threshold = khat_threshold(self.num_samples)
        khat = {
            "median": float(np.quantile(self.khat, 0.5, method="nearest")),
            "p90": float(np.quantile(self.khat, 0.9, method="nearest")),
            "share_above_0.5": float((self.khat > KHAT_GOOD).mean()),
            "share_above_0.7": float((self.khat > KHAT_BAD).mean()),
            "threshold": threshold,
            "share_above_threshold": float((self.khat > threshold).mean()),
            "share_unfitted": float((self.khat == np.inf).mean()),
        }
        return {"log_px": log_px, "khat": khat}


def khat_threshold(num_samples: int) -> float:
    r""":math:`\min(1 - 1/\log_{10} K, 0.7)`: the :math:`\hat k` above which PSIS with :math:`K` draws is unreliable
    (Vehtari et al. 2024, sec. 3.2.4); 0.5 at the default :math:`K = 100`, 0.7 only from :math:`K = 2155`."""
    return min(1 - 1 / math.log10(num_samples), KHAT_BAD) if num_samples > 10 else -math.inf


def pareto_smoothed(log_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's PSIS on each row of ``log_weights`` ``(U, K)``.

    :returns: the Pareto-smoothed estimate :math:`\\log \\frac1K \\sum_k \\tilde w_k` ``(U,)`` and :math:`\\hat k`
        ``(U,)``. Rows whose log weights agree to within :data:`FLAT_WEIGHTS` nats (a proposal equal to the posterior,
        up to rounding) have no tail to fit: :math:`\\hat k = -\\infty` and their plain mean. A row ArviZ cannot fit
        (with :math:`K < 21` the tail holds fewer than five weights) keeps ArviZ's :math:`\\hat k = \\infty` and its
        unsmoothed mean.
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if log_weights.shape[-1] < 5:  # ArviZ needs a tail of five weights; it fails outright on fewer than two draws
        khat = np.full(log_weights.shape[0], np.inf)
        khat[log_weights.max(-1) - log_weights.min(-1) <= FLAT_WEIGHTS] = -np.inf
        return _logsumexp(log_weights) - math.log(log_weights.shape[-1]), khat
    with warnings.catch_warnings():
        # ArviZ warns about k > 0.7 row by row; the caller reports the share instead
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(log_weights, normalize=False)
    smoothed, khat = np.asarray(smoothed, dtype=np.float64), np.asarray(khat, dtype=np.float64).copy()
    flat = log_weights.max(-1) - log_weights.min(-1) <= FLAT_WEIGHTS
    khat[flat] = -np.inf
    raw = flat | ~np.isfinite(smoothed).all(-1)
    return _logsumexp(np.where(raw[:, None], log_weights, smoothed)) - math.log(log_weights.shape[-1]), khat


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(-1, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(-1, keepdims=True)))[..., 0]


# --- reading the traces ---------------------------------------------------------------------------------------------
_PARTICLES = "_importance_particles"


def _sites(trace: poutine.Trace) -> list[dict[str, Any]]:
    """The sample sites, without the ones plates record for their subsampling."""
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _observed(site: dict[str, Any]) -> bool:
    """An observed site that is data (not a ``pyro.factor``)."""
    return site["is_observed"] and not site["infer"].get("is_auxiliary", False)


def _plates(site: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """The site's vectorised plates other than the particles: name -> (dim, size)."""
    return {f.name: (f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized and f.name != _PARTICLES}


def plate_nesting(model: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> int:
    """How many plate dimensions the model and guide use (one pass of each on ``x``)."""
    guide_tr = poutine.trace(model.guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x, y)
    return max((-d for tr in (guide_tr, model_tr) for s in _sites(tr) for d, _ in _plates(s).values()), default=0)


def traces(
    model: Any,
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_samples: int,
    nesting: int,
    given: poutine.Trace | None = None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """The guide's trace with ``num_samples`` particles in a plate at dim ``-(nesting + 1)`` and enumerated sites to
    the left of it, and the model's trace replayed against it, both with log-densities computed. Sites in ``given``
    take its values (each particle's) instead of being drawn."""

    def vectorised(fn: Callable) -> Callable:
        def wrapped(*args):
            with pyro.plate(_PARTICLES, num_samples, dim=-(nesting + 1)):
                return fn(*args)

        return wrapped

    guide = vectorised(model.guide if given is None else poutine.replay(model.guide, trace=given))
    guide = poutine.enum(guide, first_available_dim=-(nesting + 2))
    guide_tr = poutine.trace(guide).get_trace(x, y)
    model_tr = poutine.trace(poutine.replay(vectorised(model.model), trace=guide_tr)).get_trace(x, y)
    guide_tr.compute_log_prob()
    model_tr.compute_log_prob()
    return guide_tr, model_tr


class _Reader:
    """Log-densities of one pair of traces as ``(K, units)`` or ``(K, images)`` tensors."""

    def __init__(self, guide_tr: poutine.Trace, model_tr: poutine.Trace, nesting: int, num_samples: int):
        self.guide_tr, self.model_tr, self.nesting, self.k = guide_tr, model_tr, nesting, num_samples
        observed = [s for s in _sites(model_tr) if _observed(s)]
        if not observed:
            raise DiagnosticError("the model observes nothing (no site with obs=); log p(x) needs the images observed")
        plates = _plates(observed[0])
        if not plates:
            raise DiagnosticError(
                f"the observed site {observed[0]['name']!r} is outside every plate; put the images in a plate "
                '(pyro.plate("data", B)) so that each image, or group, gets its own weight'
            )
        self.unit, (self.unit_dim, self.units) = min(plates.items(), key=lambda item: item[1][0])
        #: the innermost plate of the observed site: an image's, inside the unit plate when a latent is global
        self.inner = max(plates.items(), key=lambda item: item[1][0])[0]
        self.enumerated = {s["name"] for s in _sites(guide_tr) if s["infer"].get("_enumerate_dim") is not None}

    def enum_dependent(self, lp: torch.Tensor) -> bool:
        lead = lp.shape[: max(lp.dim() - self.nesting - 1, 0)]
        return any(size > 1 for size in lead)

    def _plate_part(self, site: dict[str, Any], lp: torch.Tensor) -> torch.Tensor:
        """``lp`` as ``(K or 1, plate dims...)`` with exactly ``nesting`` plate dims."""
        if self.unit not in _plates(site):
            raise DiagnosticError(
                f"the site {site['name']!r} lies outside the plate {self.unit!r} that holds the observed images; a "
                "latent shared by every unit has no per-unit weight (give it a plate, as UG-VAE's global latent has)"
            )
        n = self.nesting + 1
        if lp.dim() < n:
            lp = lp.reshape((1,) * (n - lp.dim()) + lp.shape)
        return lp.reshape(lp.shape[lp.dim() - n :]).double()

    def per_unit(self, site: dict[str, Any], lp: torch.Tensor) -> torch.Tensor:
        """Summed over the plates inside the unit plate: ``(K, units)``."""
        lp = self._plate_part(site, lp)
        inner = tuple(range(lp.dim() + self.unit_dim + 1, lp.dim()))
        if inner:
            lp = lp.sum(inner)
        return lp.reshape(lp.shape[0], -1).expand(self.k, self.units)

    def _own_plates(self, site: dict[str, Any], value: torch.Tensor, event: int = 0) -> torch.Tensor:
        """``value`` ``(K or 1, plate dims..., *event)`` reduced to the site's own plates, flattened: ``(K, N, *event)``
        (dims of plates the site is not in have size 1 and are dropped)."""
        n, plates = self.nesting + 1, _plates(site)
        own = {dim for dim, _ in plates.values()}
        keep = (slice(None),) + tuple(slice(None) if i - n in own else 0 for i in range(1, n))
        value = value[keep]
        sizes = [size for _, size in sorted(plates.values())]
        return value.expand(self.k, *sizes, *value.shape[value.dim() - event :]).reshape(
            self.k, -1, *value.shape[value.dim() - event :]
        )

    def per_image(self, site: dict[str, Any], lp: torch.Tensor) -> torch.Tensor:
        """Every element of the site's plates (images, for an observed site): ``(K, images)``."""
        return self._own_plates(site, self._plate_part(site, lp))

    def check_guide(self) -> None:
        for site in _sites(self.guide_tr):
            if site["is_observed"] or site["name"] in self.enumerated:
                continue
            if self.enum_dependent(site["unscaled_log_prob"]):
                raise DiagnosticError(
                    f"the guide's site {site['name']!r} depends on an enumerated site; sample enumerated discrete "
                    "latents last in the guide (nothing may read them) to use the importance diagnostics"
                )
        for site in _sites(self.model_tr):
            if not site["is_observed"] and site["name"] not in self.guide_tr.nodes:
                raise DiagnosticError(
                    f"the model's latent site {site['name']!r} has no site in the guide; every latent needs a proposal"
                )

    def enumerated_terms(self) -> tuple[list[dict[str, Any]], torch.Tensor | None]:
        """The model sites that carry an enumeration dimension and the sum of their log-densities."""
        sites = [s for s in _sites(self.model_tr) if self.enum_dependent(s["unscaled_log_prob"])]
        if not sites:
            return [], None
        if len({tuple(sorted(_plates(s))) for s in sites}) > 1:
            names = ", ".join(repr(s["name"]) for s in sites)
            raise DiagnosticError(
                f"the sites {names} depend on an enumerated latent but lie in different plates; only a discrete "
                "latent whose dependants share its plates can be summed out here"
            )
        return sites, sum(s["unscaled_log_prob"] for s in sites)

    def _sum_out(self, lp: torch.Tensor) -> torch.Tensor:
        return lp.logsumexp(tuple(range(lp.dim() - self.nesting - 1)))

    def log_weights(self, scope: str = "all") -> torch.Tensor:
        r""":math:`\log p(x, h_k) - \log q(h_k \mid x)` per particle and unit, ``(K, units)`` (``scope="all"``); the
        terms of the latents outside the images' innermost plate per unit (``"global"``, ``(K, units)``: UG-VAE's
        :math:`\beta`), or those of the sites inside it per image (``"local"``, ``(K, images)``)."""
        self.check_guide()
        sites, joint = self.enumerated_terms()
        reduce = self.per_image if scope == "local" else self.per_unit

        def wanted(site: dict[str, Any]) -> bool:
            return scope == "all" or (self.inner in _plates(site)) == (scope == "local")

        total = 0.0
        names = {s["name"] for s in sites}
        for site in _sites(self.model_tr):
            if site["name"] not in names and wanted(site):
                total = total + reduce(site, site["unscaled_log_prob"])
        if joint is not None and wanted(sites[0]):
            total = total + reduce(sites[0], self._sum_out(joint))
        for site in _sites(self.guide_tr):
            if not site["is_observed"] and site["name"] not in self.enumerated and wanted(site):
                total = total - reduce(site, site["unscaled_log_prob"])
        if isinstance(total, float):
            size = self.units if scope != "local" else self.units * self.per_group()
            return torch.zeros(self.k, size, dtype=torch.float64, device=_device(self.model_tr))
        return total

    def per_group(self) -> int:
        """Images per unit."""
        observed = next(s for s in _sites(self.model_tr) if _observed(s))
        return math.prod(size for _, size in _plates(observed).values()) // self.units

    def global_values(self) -> poutine.Trace:
        """A trace holding only the guide's global latents (outside the images' innermost plate), to replay."""
        trace = poutine.Trace()
        for site in _sites(self.guide_tr):
            if not site["is_observed"] and site["name"] not in self.enumerated and self.inner not in _plates(site):
                trace.add_node(site["name"], **site)
        return trace

    def log_likelihood(self) -> dict[str, torch.Tensor]:
        r""":math:`\log p(x_i \mid h_k)` of every observed site per particle and image, ``(K, images)``, an enumerated
        discrete latent summed out against its prior."""
        sites, _ = self.enumerated_terms()
        priors = [s["unscaled_log_prob"] for s in sites if s["name"] in self.enumerated]
        names = {s["name"] for s in sites}
        out = {}
        for site in _sites(self.model_tr):
            if not _observed(site):
                continue
            lp = site["unscaled_log_prob"]
            if site["name"] in names:
                lp = self._sum_out(lp + sum(priors))
            out[site["name"]] = self.per_image(site, lp)
        return out

    def draws(self) -> dict[str, tuple[str, torch.Tensor]]:
        """The guide's continuous draws: name -> (plate, values ``(K, plate elements, *event)``), the plate being the
        innermost one the site lies in (``"data"`` for local latents, ``"groups"`` for UG-VAE's global one)."""
        out = {}
        for site in _sites(self.guide_tr):
            if site["is_observed"] or site["name"] in self.enumerated:
                continue
            plates = _plates(site)
            if not plates:
                continue
            value = site["value"]
            event = len(site["fn"].event_shape)
            batch = value.shape[: value.dim() - event]
            n = self.nesting + 1
            value = value.reshape(*((1,) * (n - len(batch))), *value.shape)
            value = self._own_plates(site, value, event)
            inner = max(plates.items(), key=lambda item: item[1][0])[0]
            out[site["name"]] = (inner, value)
        return out


def _device(trace: poutine.Trace) -> torch.device:
    return next(s["unscaled_log_prob"].device for s in _sites(trace))


# --- the estimates --------------------------------------------------------------------------------------------------
def default_order(model: Any, data: ImageDataset, group_size: int | None = None) -> torch.Tensor:
    """The images scored, in order: every image for a model without groups; for one with groups of ``group_size``
    (default: the model's), whole groups in the dataset's seeded epoch order, as training and
    :func:`~untwine.metrics.evaluate_elbo` form them."""
    group = group_size or _group_size(model)
    if group == 1:
        return torch.arange(len(data))
    n = len(data) - len(data) % group
    if n == 0:
        raise DiagnosticError(f"{data.name} has {len(data)} images, fewer than one group of {group}")
    return data.epoch_order(torch.Generator().manual_seed(0))[:n]


def _group_size(model: Any) -> int:
    return int(model.group_size) if isinstance(model, (Model, GlobalLatent)) else 1


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DiagnosticError(f"{name} must be a positive integer, got {value!r}")
    return value


def _chunks(model: Any, data: ImageDataset, order: torch.Tensor | None, max_images: int | None, draws: int):
    group = _group_size(model)
    order = default_order(model, data) if order is None else torch.as_tensor(order, dtype=torch.long).flatten()
    if max_images is not None:
        order = order[: _check_count("max_images", max_images)]
    order = order[: len(order) - len(order) % group]
    if len(order) == 0:
        raise DiagnosticError(f"no whole group of {group} images to score in {len(data)} images of {data.name}")
    units = order.reshape(-1, group)
    per_chunk = max(1, draws // group)
    return units, [units[i : i + per_chunk] for i in range(0, len(units), per_chunk)]


@torch.no_grad()
def importance_log_likelihood(
    model: Any,
    data: ImageDataset,
    num_samples: int = 100,
    max_images: int | None = None,
    order: torch.Tensor | None = None,
    draws_per_pass: int = 4096,
    seed: int = 0,
    labels: bool = False,
    inner_samples: int = 10,
    device: torch.device | str | None = None,
) -> ImportanceResult:
    r"""Log importance weights of ``num_samples`` guide draws for every image (or group) of ``data``, with the
    importance-weighted bound, its Pareto-smoothed version and :math:`\hat k` (see the module docstring).

    .. math::

        \log \hat p_K(x) = \log \frac1K \sum_{k=1}^K \frac{p(x, h_k)}{q(h_k \mid x)}, \quad h_k \sim q(h \mid x)
        \qquad \text{(Burda et al. 2016, eq. 8)}

    :param order: images to score, in order (default :func:`default_order`); a model with groups scores consecutive
        runs of ``group_size`` of them as groups.
    :param max_images: score only the first ``max_images`` of ``order`` (rounded down to whole groups).
    :param draws_per_pass: images times draws per model pass (memory; an enumerated discrete latent multiplies it by
        its number of values).
    :param seed: seeds the draws (the caller's random streams are left as they were).
    :param labels: pass the dataset's labels to model and guide (:math:`\log p(x \mid y)`; default :math:`\log p(x)`).
    :param inner_samples: for a model with a latent per group, draws :math:`L` of the images' own latents per draw of
        the group's (:func:`_nested`); ``1`` gives the plain estimator, one joint draw per weight.
    :raises DiagnosticError: for a pair whose traces cannot be read this way, saying why.
    """
    k = _check_count("num_samples", num_samples)
    device = model_device(model, device)
    group = _group_size(model)
    inner_samples = _check_count("inner_samples", inner_samples) if group > 1 else 1
    per_pass = max(1, _check_count("draws_per_pass", draws_per_pass) // (k * inner_samples))
    units, chunks = _chunks(model, data, order, max_images, per_pass)
    log_w = torch.empty(len(units), k, dtype=torch.float64, device=device)
    start = 0
    with eval_mode(model):
        with seeded(seed, device):  # a trial pass apart, so the draws below are those of a plain guide run
            x, y = data.batch(units[0], device)
            nesting = plate_nesting(model, x, y if labels else None)
        with seeded(seed, device):
            for chunk in chunks:
                x, y = data.batch(chunk.flatten(), device)
                y = y if labels else None
                reader = _Reader(*traces(model, x, y, k, nesting), nesting, k)
                if group > 1 and reader.inner != reader.unit and inner_samples > 1:
                    log_w[start : start + len(chunk)] = _nested(model, x, y, reader, inner_samples).T
                else:
                    log_w[start : start + len(chunk)] = reader.log_weights().T
                start += len(chunk)
    log_w = log_w.cpu().numpy()
    iwae = _logsumexp(log_w) - math.log(k)
    psis, khat = pareto_smoothed(log_w)
    return ImportanceResult(log_w, units.numpy(), iwae, psis, khat)


def _nested(model: Any, x: torch.Tensor, y: torch.Tensor | None, outer: _Reader, inner: int) -> torch.Tensor:
    r"""Log weights of a group with a global latent :math:`\beta` and images :math:`x_{1..B}` with local latents
    :math:`h_i`, each image's likelihood averaged over ``inner`` draws of its own latents:

    .. math::

        \log w_k = \log \frac{p(\beta_k)}{q(\beta_k \mid X, H^{(0)})}
            + \sum_{i=1}^{B} \log \frac1L \sum_{l=1}^{L} \frac{p(x_i, h_i^{(l)} \mid \beta_k)}
            {q(h_i^{(l)} \mid x_i, \beta_k)},

    with :math:`(H^{(0)}, \beta_k)` one joint draw of the guide and :math:`h_i^{(l)}` fresh draws of the guide with
    :math:`\beta` held at :math:`\beta_k`. Given :math:`\beta_k` the inner averages are independent unbiased
    estimates of :math:`p(x_i \mid \beta_k)`, so :math:`\mathbb{E}[w_k] = p(X)` as for the plain estimator; but with
    one joint draw per weight the log-weight variances of all :math:`B` images add up, and the inner averages divide
    each image's. The variance that :math:`\beta` itself brings is left, and :math:`\hat k` of the :math:`K` outer
    weights reports it.

    :returns: ``(K, units)``.
    """
    k, nesting = outer.k, outer.nesting
    given = outer.global_values()
    for site in given.nodes.values():
        dim = site["value"].dim() - len(site["fn"].event_shape) - nesting - 1
        site["value"] = site["value"].repeat_interleave(inner, dim=dim)
    reader = _Reader(*traces(model, x, y, k * inner, nesting, given=given), nesting, k * inner)
    local = reader.log_weights("local").reshape(k, inner, outer.units, -1)
    local = (local.logsumexp(1) - math.log(inner)).sum(-1)
    return outer.log_weights("global") + local


# --- ArviZ ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def to_inference_data(
    model: Any,
    data: ImageDataset,
    num_samples: int = 100,
    num_images: int = 32,
    history: Sequence[Mapping[str, Any]] | None = None,
    order: torch.Tensor | None = None,
    seed: int = 0,
    inner_samples: int = 10,
    device: torch.device | str | None = None,
) -> az.InferenceData:
    """The guide's posterior over the first ``num_images`` images of ``order`` (default :func:`default_order`; for a
    model with groups, whole groups: rounded down, but at least one) as an ArviZ ``InferenceData`` (one chain of
    ``num_samples`` independent guide draws).

    * ``posterior``: each continuous latent of the guide, dims ``(chain, draw, image, latent)`` for local latents
      (the model's ``latent_site``; another site ``s`` gets ``s_dim``) and ``(chain, draw, group, <site>_dim)`` for a
      latent per group (UG-VAE's ``beta``); a model with a class posterior adds ``pi``, draws of
      :math:`q(\\pi \\mid x)` with dims ``(chain, draw, image, class)`` (N-VAE's class proportions: the guide's
      posterior in labelled training; the unlabelled model scored here integrates :math:`\\pi` out).
    * ``log_likelihood``: :math:`\\log p(x_i \\mid h)` of each draw and image (an enumerated discrete latent summed
      out against its prior); ``sample_stats``: ``log_weight``, the importance log weight of each draw and unit, as
      :func:`importance_log_likelihood` computes it (with ``inner_samples`` for a model with groups).
    * ``observed_data``: the images, dims ``(image, channel, row, column)``.
    * ``constant_data``: the model's learned prior parameters (:meth:`~untwine.pyro_models.base.Model.prior_parameters`,
      e.g. ISA-VAE's ``exponents``) and, from a training ``history``, their values after each epoch (dim ``epoch``).

    The draws are independent, so R-hat and ESS mean nothing here: summarise with :func:`summary` (ArviZ's
    ``kind="stats"``), and plot with ``az.plot_posterior`` / ``az.plot_pair``.
    """
    k = _check_count("num_samples", num_samples)
    device = model_device(model, device)
    group = _group_size(model)
    order = default_order(model, data) if order is None else torch.as_tensor(order, dtype=torch.long).flatten()
    n = min(_check_count("num_images", num_images), len(order))
    order = order[: max(n - n % group, group)]
    if len(order) < group:
        raise DiagnosticError(f"{data.name} has {len(order)} images, fewer than one group of {group}")
    with eval_mode(model):
        x, _ = data.batch(order, device)
        with seeded(seed, device):
            nesting = plate_nesting(model, x[:group], None)
        with seeded(seed, device):
            reader = _Reader(*traces(model, x, None, k, nesting), nesting, k)
            nested = group > 1 and reader.inner != reader.unit and _check_count("inner_samples", inner_samples) > 1
            log_w = (_nested(model, x, None, reader, inner_samples) if nested else reader.log_weights()).T
            draws = reader.draws()
            likelihood = reader.log_likelihood()
            pi = model.class_proportions(x).sample((k,)) if isinstance(model, ClassPosterior) else None
    latent = getattr(model, "latent_site", "z")
    posterior, dims = {}, {}
    for name, (plate, value) in draws.items():
        unit = "image" if value.shape[1] == len(order) else "group"
        posterior[name] = value[None].double().cpu().numpy()
        dims[name] = [unit, "latent" if name == latent else f"{name}_dim"][: value.dim() - 1]
    if pi is not None:
        posterior["pi"] = pi[None].double().cpu().numpy()
        dims["pi"] = ["image", "class"]
    log_likelihood = {name: lp[None].cpu().numpy() for name, lp in likelihood.items()}
    dims.update({name: ["image"] for name in log_likelihood})
    observed = {name: x.cpu().numpy() for name in log_likelihood}
    constant = {name: p.detach().double().cpu().numpy() for name, p in _prior_parameters(model).items()}
    for name in constant:
        dims[name] = [f"{name}_dim"][: constant[name].ndim]
    if history:
        keys = [key for key in (model.epoch_summary() if isinstance(model, Model) else {}) if key in history[0]]
        for key in keys:
            constant[f"{key}_by_epoch"] = np.array([float(row[key]) for row in history])
            dims[f"{key}_by_epoch"] = ["epoch"]
    coords = {
        "image": order.numpy(),
        "group": np.arange(len(order) // group),
        "channel": np.arange(x.shape[1]),
        "row": np.arange(x.shape[2]),
        "column": np.arange(x.shape[3]),
    }
    if history:
        coords["epoch"] = np.array([int(row.get("epoch", i + 1)) for i, row in enumerate(history)])
    for name in observed:
        dims.setdefault(f"{name}__observed", ["image", "channel", "row", "column"])
    obs_dims = {name: ["image", "channel", "row", "column"] for name in observed}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant_data without chain/draw, unused coords
        return az.from_dict(
            posterior=posterior,
            log_likelihood=log_likelihood,
            sample_stats={"log_weight": log_w.T[None].cpu().numpy()},
            observed_data=observed,
            constant_data=constant or None,
            coords=coords,
            dims={**dims, **obs_dims, "log_weight": ["unit"]},
        )


def _prior_parameters(model: Any) -> dict[str, torch.Tensor]:
    return model.prior_parameters() if isinstance(model, Model) else {}


def summary(idata: az.InferenceData, **kwargs: Any) -> Any:
    """``az.summary`` of the posterior with ``kind="stats"`` (mean, sd, HDI): R-hat and ESS are left out, since the
    draws of a guide are independent by construction and say nothing there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.summary(idata, kind="stats", **kwargs)
