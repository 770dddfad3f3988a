r"""Pyro's ELBOs, with ``differentiable_loss`` kept free of host reads where that is possible over Pyro's public API.

Pyro's ``Trace_ELBO`` and ``TraceMeanField_ELBO`` move values to the host in every call of ``differentiable_loss``:
``torch_item`` on the log-density sums (the float loss they add the surrogate's gradient to) and ``warn_if_nan``
(a ``bool`` of ``isnan(loss).any()``). On a GPU each read waits for every queued kernel, so a training step cannot
run ahead of the device. :class:`SyncFreeTrace_ELBO` and :class:`SyncFreeTraceMeanField_ELBO` compute the same loss
and gradient from the same traces with tensors only; :func:`~untwine.inference.train.fit` checks the loss for NaN/inf
itself, on the device. They subclass Pyro's classes and read the traces through their public interface
(``Trace.log_prob_sum``, the sites' ``score_parts``, ``kl_divergence``); only the drawing of the particles goes
through :mod:`untwine.inference._compat`.

Enumeration uses Pyro's ``TraceEnum_ELBO`` as it is (the models that enumerate name it in their ``default_loss``):
its DiCE contraction lives in private Pyro modules, and a copy of it without host reads measured no faster on a CPU
(UG-VAE and semi-supervised N-VAE steps at batches 8 and 128 within a few per cent of Pyro's).

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

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import MultiFrameTensor, check_fully_reparametrized, get_plate_stacks, is_validation_enabled
from pyro.poutine import Trace
from torch.distributions import kl_divergence

from untwine.inference._compat import particle_traces


def score_function_surrogate(model_trace: Trace, guide_trace: Trace) -> torch.Tensor | None:
    r"""What Pyro's surrogate ELBO adds to :math:`\log p - \log q` for the guide's non-reparameterised sites.

    Zero in value; its gradient is Pyro's score-function term
    :math:`\overline{\log r} \cdot \nabla \log q(z_{\text{nr}})`, with :math:`\log r` summed over the plates the site
    is not inside of (Pyro's Rao-Blackwellisation), plus the difference between a site's entropy term and its
    log-density where a distribution's ``score_parts`` give one. ``None`` when every guide site is
    reparameterised.
    """
    extra = None
    log_r = None
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        log_prob, score_function_term, entropy_term = site["score_parts"]
        terms = []
        # a reparameterised site's entropy term is its log-density, already in the ELBO
        if entropy_term is not log_prob:
            terms.append(site["log_prob_sum"])
            if not is_identically_zero(entropy_term):
                terms.append(-entropy_term.sum())
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = _log_r(model_trace, guide_trace)
            terms.append((log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum())
        for term in terms:
            extra = term if extra is None else extra + term
    return None if extra is None else extra - extra.detach()


def _log_r(model_trace: Trace, guide_trace: Trace) -> MultiFrameTensor:
    r""":math:`\log p - \log q` of every site, detached, keyed by its plates (the weight of the score function)."""
    log_r = MultiFrameTensor()
    stacks = get_plate_stacks(model_trace)
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            term = site["log_prob"]
            if not site["is_observed"]:
                term = term - guide_trace.nodes[name]["log_prob"]
            log_r.add((stacks[name], term.detach()))
    return log_r


class SyncFreeTrace_ELBO(Trace_ELBO):
    r"""``Trace_ELBO`` whose ``differentiable_loss`` never reads a tensor on the host.

    Same loss value and gradient as ``Trace_ELBO`` on the same traces: reparameterised sites contribute
    :math:`\log p - \log q` directly (``Trace.log_prob_sum`` of model and guide), non-reparameterised sites add Pyro's
    score-function term (:func:`score_function_surrogate`). Subclasses change the objective through
    :meth:`particle_loss`; ``loss`` and ``loss_and_grads`` (what ``pyro.infer.SVI`` calls) follow it.
    """

    def particle_loss(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        r""":math:`-(\log p - \log q)` of one particle, with the gradient of Pyro's surrogate loss."""
        elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
        extra = score_function_surrogate(model_trace, guide_trace)
        return -elbo if extra is None else -(elbo + extra)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for model_trace, guide_trace in particle_traces(self, model, guide, args, kwargs):
            loss = loss + self.particle_loss(model_trace, guide_trace)
        return loss if self.num_particles == 1 else loss / self.num_particles

    def loss(self, model, guide, *args, **kwargs) -> float:
        """:meth:`differentiable_loss` as a float (one host read)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """:meth:`differentiable_loss` back-propagated into the parameters, returned as a float (one host read)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if torch.is_tensor(loss) and loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return float(loss.detach()) if torch.is_tensor(loss) else float(loss)


class SyncFreeTraceMeanField_ELBO(TraceMeanField_ELBO):
    r"""``TraceMeanField_ELBO`` (closed-form KL where registered) without host reads in ``differentiable_loss``.

    .. math::

        \mathcal{L} = \sum_{\text{observed}} \log p(x \mid z)
            - \sum_{\text{latent}} \mathrm{KL}\big(q(z) \,\|\, p(z)\big),

    with a Monte Carlo :math:`\log p(z) - \log q(z)` where no closed form is registered. Like Pyro's, it needs a
    fully reparameterised mean-field guide (checked when validation is on).
    """

    def particle_loss(self, model_trace: Trace, guide_trace: Trace) -> torch.Tensor:
        r""":math:`-\mathcal{L}` of one particle."""
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
            batch_shape = guide_site["fn"].batch_shape
            elbo = elbo - (kl_qp.expand(batch_shape).sum() if torch.is_tensor(kl_qp) else kl_qp * batch_shape.numel())
        for name, guide_site in guide_trace.nodes.items():  # auxiliary guide sites
            if guide_site["type"] == "sample" and name not in model_trace.nodes:
                elbo = elbo - guide_site["score_parts"].entropy_term.sum()
        return -elbo

    differentiable_loss = SyncFreeTrace_ELBO.differentiable_loss
