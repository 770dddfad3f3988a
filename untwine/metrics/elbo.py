"""Dataset-level ELBO for any model/guide pair, split into reconstruction and KL terms."""

from __future__ import annotations

import torch
from pyro import poutine
from torch import nn

from untwine.data.base import ImageDataset
from untwine.metrics.utils import eval_mode, model_device
from untwine.pyro_models.base import GlobalLatent, Model


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

    (Monte Carlo over ``num_particles`` draws; discrete latents are sampled, not enumerated). Works for any pair whose
    observed sites hold the data: it reads the traces, not the model's internals. A model whose images come in groups
    (:attr:`~untwine.pyro_models.base.Model.group_size` above 1: a global latent per group, UG-VAE) gets batches of
    whole groups drawn in the dataset's seeded epoch order, like training batches, so each global KL counts once per
    group; the images after the last whole group are left out. A model/guide pair that is neither a
    :class:`~untwine.pyro_models.base.Model` nor a :class:`~untwine.pyro_models.base.GlobalLatent` is read as
    ungrouped.

    :returns: ``{"elbo", "log_likelihood", "kl"}`` in nats per datapoint.
    """
    device = model_device(model, device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    group = int(model.group_size) if isinstance(model, (Model, GlobalLatent)) else 1
    n = len(data) - len(data) % group
    if n == 0:
        raise ValueError(f"{data.name} has {len(data)} images, fewer than one group of {group}")
    batch_size = max(group, batch_size - batch_size % group)
    # Groups are formed as in training (the dataset's seeded epoch order), not from neighbours in storage order, which
    # may be sorted by class, factor or domain.
    order = data.epoch_order(torch.Generator().manual_seed(0))[:n] if group > 1 else torch.arange(n)
    with eval_mode(model):
        for start in range(0, n, batch_size):
            x, y = data.batch(order[start : start + batch_size], device)
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
    log_lik, neg_kl = (totals / (n * num_particles)).tolist()
    return {"elbo": log_lik + neg_kl, "log_likelihood": log_lik, "kl": -neg_kl}
