"""Dataset-level ELBO for any model/guide pair, split into reconstruction and KL terms."""

from __future__ import annotations

import torch
from pyro import poutine
from torch import nn

from untwine.data.base import ImageDataset


@torch.no_grad()
def evaluate_elbo(
    model: nn.Module,
    data: ImageDataset,
    batch_size: int = 1024,
    num_particles: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    r"""Per-datapoint ELBO over ``data``, without any β or KL re-weighting.

    For each minibatch the guide is traced, the model replayed against it, and the unscaled log-densities
    summed:

    .. math::

        \mathrm{ELBO} = \underbrace{\mathbb{E}_q \log p(x \mid z)}_{\texttt{log\_likelihood}}
            - \underbrace{\mathbb{E}_q\big[\log q(z \mid x) - \log p(z)\big]}_{\texttt{kl}}

    (Monte Carlo over ``num_particles`` draws; global latents count once per batch). Works for any pair whose
    observed sites hold the data: it reads the traces, not the model's internals.

    :returns: ``{"elbo", "log_likelihood", "kl"}`` in nats per datapoint.
    """
    device = device if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for start in range(0, len(data), batch_size):
            x, y = data.batch(torch.arange(start, min(start + batch_size, len(data))), device)
            for _ in range(num_particles):
                guide_tr = poutine.trace(model.guide).get_trace(x, y)
                model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x, y)
                model_tr.compute_log_prob()
                guide_tr.compute_log_prob()
                for site in model_tr.nodes.values():
                    if site["type"] != "sample":
                        continue
                    if site["is_observed"]:
                        totals[0] += site["unscaled_log_prob"].sum()
                    else:
                        totals[1] += site["unscaled_log_prob"].sum()
                for site in guide_tr.nodes.values():
                    if site["type"] == "sample" and not site["is_observed"]:
                        totals[1] -= site["unscaled_log_prob"].sum()
    finally:
        model.train(was_training)
    log_lik, neg_kl = (totals / (len(data) * num_particles)).tolist()
    return {"elbo": log_lik + neg_kl, "log_likelihood": log_lik, "kl": -neg_kl}
