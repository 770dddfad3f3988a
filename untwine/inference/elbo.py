r"""Pyro's ELBOs without a host-device synchronisation in ``differentiable_loss``.

Pyro's ``Trace_ELBO``, ``TraceMeanField_ELBO`` and ``TraceEnum_ELBO`` move values to the host in every call of
``differentiable_loss``: ``torch_item`` on each site's log-density sum (the float loss they add the surrogate's
gradient to), ``warn_if_nan`` (a ``bool`` of ``isnan(loss).any()``) and, in ``TraceEnum_ELBO``, a ``mask.all()``
inside the DiCE expectation. On a GPU each of these waits for every queued kernel, so a training step cannot run
ahead of the device; on a CPU they cost Python time. The classes here compute the same loss and the same gradient
from the same traces with tensors only. :func:`~untwine.inference.train.fit` checks the loss for NaN/inf itself,
on the device.

The objective is the usual Monte Carlo ELBO (Kingma & Welling 2014; Ranganath et al. 2014),

.. math::

    \mathcal{L} = \mathbb{E}_{q(z)}\big[\log p(x, z) - \log q(z)\big], \qquad
    \widehat{\nabla \mathcal{L}} = \nabla \Big[\log p(x, z) - \log q(z)
        + \overline{\big(\log p(x, z) - \log q(z)\big)}\, \log q(z_{\text{nr}})\Big],

where :math:`z_{\text{nr}}` are the guide's non-reparameterised sites and the bar marks a value treated as a
constant (Pyro's surrogate, with the same Rao-Blackwellisation over plates). ``differentiable_loss`` returns
:math:`-\mathcal{L}` with the gradient of the surrogate; when every guide site is reparameterised the surrogate is
the ELBO itself and the loss is simply :math:`-\mathcal{L}`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from opt_einsum import shared_intermediates
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from pyro.infer.trace_elbo import _compute_log_r
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.infer.util import Dice, check_fully_reparametrized, is_validation_enabled
from pyro.ops import packed
from pyro.ops.contract import contract_tensor_tree
from pyro.ops.einsum.adjoint import require_backward
from pyro.ops.rings import MarginalRing, SampleRing
from torch.distributions import kl_divergence


def particle_losses(elbo, extra) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, surrogate loss)`` of one particle; the same object twice when there is no score-function term."""
    if is_identically_zero(extra):
        return -elbo, -elbo
    return -elbo, -(elbo + extra)


def _combine(loss, surrogate, num_particles: int) -> torch.Tensor:
    """``loss`` in value, ``surrogate``'s gradient; ``surrogate is loss`` means no score-function terms."""
    if surrogate is loss:
        return loss if num_particles == 1 else loss / num_particles
    if num_particles != 1:
        loss, surrogate = loss / num_particles, surrogate / num_particles
    return loss.detach() + (surrogate - surrogate.detach())


class SyncFreeTrace_ELBO(Trace_ELBO):
    r"""``Trace_ELBO`` whose ``differentiable_loss`` never reads a tensor on the host.

    Same loss value and gradient as ``Trace_ELBO`` (reparameterised sites contribute
    :math:`\log p - \log q` directly; non-reparameterised sites add Pyro's score-function term
    :math:`\overline{\log r} \cdot \log q` with the same Rao-Blackwellisation over plates). ``loss`` and
    ``loss_and_grads`` (used by ``pyro.infer.SVI``) are Pyro's.
    """

    def _elbo_and_extra(self, model_trace, guide_trace, skip: tuple[str, ...] = ()):
        """The ELBO of one particle over the sites not in ``skip``, and ``extra``, what Pyro's surrogate adds to it
        (score-function terms; a Python 0 when every guide site is reparameterised)."""
        elbo = 0.0
        extra = 0.0
        log_r = None
        for name, site in model_trace.nodes.items():
            if site["type"] == "sample" and name not in skip:
                elbo = elbo + site["log_prob_sum"]
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or name in skip:
                continue
            log_prob, score_function_term, entropy_term = site["score_parts"]
            elbo = elbo - site["log_prob_sum"]
            # a reparameterised site's entropy term is its log-density: the surrogate's term equals the ELBO's
            if entropy_term is not log_prob:
                extra = extra + site["log_prob_sum"]
                if not is_identically_zero(entropy_term):
                    extra = extra - entropy_term.sum()
            if not is_identically_zero(score_function_term):
                if log_r is None:
                    log_r = _compute_log_r(model_trace, guide_trace)
                extra = extra + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return elbo, extra

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        return particle_losses(*self._elbo_and_extra(model_trace, guide_trace))

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss, surrogate = 0.0, 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss_particle, surrogate_particle = self._differentiable_loss_particle(model_trace, guide_trace)
            if isinstance(loss, float):
                same = surrogate_particle is loss_particle
                loss = loss_particle
                surrogate = loss if same else surrogate_particle
            else:
                same = surrogate is loss and surrogate_particle is loss_particle
                loss = loss + loss_particle
                surrogate = loss if same else surrogate + surrogate_particle
        return _combine(loss, surrogate, self.num_particles)


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    r"""``TraceMeanField_ELBO`` (closed-form KL where registered) without host reads in ``differentiable_loss``.

    .. math::

        \mathcal{L} = \sum_{\text{observed}} \log p(x \mid z)
            - \sum_{\text{latent}} \mathrm{KL}\big(q(z) \,\|\, p(z)\big),

    with a Monte Carlo :math:`\log p(z) - \log q(z)` where no closed form is registered. Like Pyro's, it needs a
    fully reparameterised mean-field guide (checked when validation is on).
    """

    def _differentiable_loss_particle(self, model_trace, guide_trace):
        elbo = 0.0
        for name, model_site in model_trace.nodes.items():
            if model_site["type"] != "sample":
                continue
            if model_site["is_observed"]:
                elbo = elbo + model_site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            if is_validation_enabled():
                check_fully_reparametrized(guide_site)
            try:
                kl_qp = kl_divergence(guide_site["fn"], model_site["fn"])
            except NotImplementedError:
                elbo = elbo + model_site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
                continue
            kl_qp = scale_and_mask(kl_qp, scale=guide_site["scale"], mask=guide_site["mask"])
            if torch.is_tensor(kl_qp):
                kl_qp = kl_qp.expand(guide_site["fn"].batch_shape).sum()
            else:
                kl_qp = kl_qp * torch.Size(guide_site["fn"].batch_shape).numel()
            elbo = elbo - kl_qp
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return -elbo, -elbo

    differentiable_loss = SyncFreeTrace_ELBO.differentiable_loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The ELBO estimate as a float (this reads the value on the host, once)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class _SyncFreeDice(Dice):
    """Pyro's DiCE expectation with the ``mask.all()`` branch replaced by a ``torch.where`` (same value and
    gradient: terms whose probability is zero contribute zero, whatever their cost)."""

    def compute_expectation(self, costs):
        with shared_intermediates() as cache:
            ring = MarginalRing(cache=cache)
            expected_cost = 0.0
            for ordinal, cost_terms in costs.items():
                log_factors = self._get_log_factors(ordinal)
                scale = math.exp(sum(x for x in log_factors if not isinstance(x, torch.Tensor)))
                log_factors = [x for x in log_factors if isinstance(x, torch.Tensor)]
                queries = {frozenset(cost._pyro_dims): None for cost in cost_terms}
                for log_factor in log_factors:
                    key = frozenset(log_factor._pyro_dims)
                    if queries.get(key, False) is None:
                        queries[key] = log_factor
                for cost in cost_terms:
                    key = frozenset(cost._pyro_dims)
                    if queries[key] is None:
                        query = torch.zeros_like(cost)
                        query._pyro_dims = cost._pyro_dims
                        log_factors.append(query)
                        queries[key] = query
                sum_dims = set().union(*(x._pyro_dims for x in log_factors)) - ordinal
                for query in queries.values():
                    require_backward(query)
                root = ring.sumproduct(log_factors, sum_dims)
                root._pyro_backward()
                probs = {key: query._pyro_backward_result.exp() for key, query in queries.items()}
                for cost in cost_terms:
                    key = frozenset(cost._pyro_dims)
                    prob = probs[key]
                    prob._pyro_dims = queries[key]._pyro_dims
                    cost, prob = packed.broadcast_all(cost, prob)
                    cost = torch.where(prob > 0, cost, torch.zeros((), dtype=cost.dtype, device=cost.device))
                    expected_cost = expected_cost + scale * torch.tensordot(prob, cost, dims=prob.dim())
        return expected_cost


def _compute_dice_elbo(model_trace, guide_trace):
    """Pyro's ``_compute_dice_elbo`` with :class:`_SyncFreeDice`."""
    marginal_costs, log_factors, ordering, sum_dims, scale = _compute_model_factors(model_trace, guide_trace)
    if log_factors:
        dim_to_size = {}
        for terms in log_factors.values():
            for term in terms:
                dim_to_size.update(zip(term._pyro_dims, term.shape))
        with shared_intermediates() as cache:
            ring = SampleRing(cache=cache, dim_to_size=dim_to_size)
            log_factors = contract_tensor_tree(log_factors, sum_dims, ring=ring)
        for t, log_factors_t in log_factors.items():
            marginal_costs_t = marginal_costs.setdefault(t, [])
            for term in log_factors_t:
                marginal_costs_t.append(packed.scale_and_mask(term, scale=scale))
    costs = OrderedDict(marginal_costs)
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample":
            costs.setdefault(ordering[name], []).append(packed.neg(site["packed"]["log_prob"]))
    return _SyncFreeDice(guide_trace, ordering).compute_expectation(costs)


class SyncFreeTraceEnum_ELBO(TraceEnum_ELBO):
    r"""``TraceEnum_ELBO`` (exact sums over enumerated discrete sites, DiCE gradients) without host reads.

    .. math::

        \mathcal{L} = \mathbb{E}_{q}\Big[\sum_{d} q(d \mid \cdot) \big(\log p(x, z, d) - \log q(z, d)\big)\Big]

    for guide-enumerated :math:`d` (and model-enumerated sites summed out of :math:`p`), as Pyro computes it.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        elbo = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo_particle = _compute_dice_elbo(model_trace, guide_trace)
            if not is_identically_zero(elbo_particle):
                elbo = elbo + elbo_particle
        if not torch.is_tensor(elbo) or not elbo.requires_grad:
            raise ValueError(
                f"the ELBO cannot be differentiated (it is {elbo!r}): the model and guide have no parameters or "
                "no latent sites; check that they call pyro.module or pyro.param"
            )
        return -elbo if self.num_particles == 1 else elbo / -self.num_particles
