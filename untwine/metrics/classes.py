r"""Class-aware metrics of N-VAE (Antorán & Miguel 2019): classification and the KL "feature detector".

For a model with class blocks :math:`z_c = [z_{c1}, \dots, z_{cL}]` (each :math:`d_c` wide) and shared :math:`z_s`, the
KL of each coordinate of the Gaussian posterior against :math:`\mathcal{N}(0, 1)`,

.. math::

    \mathrm{KL}_j(x) = \tfrac12\big(\mu_j^2 + \sigma_j^2 - 1 - \log \sigma_j^2\big),

averaged over a dataset is the per-dimension KL cost of the paper's fig. 5; summed over a class block and averaged
over the images of each true class it is the :math:`L \times L` matrix of fig. 10, whose diagonal dominates when the
encoder makes only the true class's block informative.
"""

from __future__ import annotations

import torch
from torch import nn

from untwine.data.base import ImageDataset
from untwine.metrics.utils import batches, eval_mode, integer_labels, model_device, normal_kl
from untwine.pyro_models.base import ClassPosterior, Model


def class_layout(model: nn.Module) -> tuple[int, int, int]:
    """``(num_classes, class_dim, shared_dim)`` of a model with class blocks, from its config.

    :raises TypeError: ``model`` is not a :class:`~untwine.pyro_models.base.Model` with the
        :class:`~untwine.pyro_models.base.ClassPosterior` capability, or its config has no class blocks.
    """
    name = type(model).__name__
    if not isinstance(model, Model) or not isinstance(model, ClassPosterior):
        raise TypeError(f"{name} has no class blocks: class metrics need a Model with the ClassPosterior capability")
    cfg = model.config
    try:
        return int(cfg.num_classes), int(cfg.class_dim), int(cfg.shared_dim)
    except AttributeError:
        raise TypeError(f"{name} has no class blocks (config.num_classes/class_dim/shared_dim)") from None


@torch.no_grad()
def classification_accuracy(
    model: nn.Module, data: ImageDataset, batch_size: int = 1024, device: torch.device | str | None = None
) -> dict[str, float]:
    r"""Accuracy of :math:`\arg\max_y q(y \mid x)` (``model.classify``) against the dataset's labels.

    :returns: ``{"accuracy", "error", "num_images"}``.
    """
    num_classes, _, _ = class_layout(model)
    labels = integer_labels(data, "class metrics", num_classes)
    device = model_device(model, device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model):
        for x, y in batches(data, batch_size, device):
            correct += (model.classify(x).argmax(-1) == y).sum()
    accuracy = correct.item() / len(labels)
    return {"accuracy": accuracy, "error": 1.0 - accuracy, "num_images": len(labels)}


@torch.no_grad()
def latent_kl(
    model: nn.Module, data: ImageDataset, batch_size: int = 1024, device: torch.device | str | None = None
) -> dict:
    r"""KL cost of every latent dimension and of every class block per true class (figs. 5 and 10).

    :returns: ``per_dimension`` ``(D,)`` mean KL of each coordinate over all images; ``class_matrix`` ``(L, L)``:
        row :math:`i` is the mean over images of true class :math:`i` of the summed KL of block :math:`j`;
        ``z_c`` and ``z_s``: total KL of the class blocks and of the shared part per image; ``z_cy``: KL of the
        true class's block per image (fig. 5's :math:`z_{cy}`); ``z_c_other``: mean KL of one other block;
        ``diagonal_ratio`` ``(L,)``: the diagonal of ``class_matrix`` over the mean of the rest of its row, and its
        ``min_diagonal_ratio``. Values are nats (tensors on the CPU, float64; totals as floats).
    """
    num_classes, class_dim, shared_dim = class_layout(model)
    labels = integer_labels(data, "class metrics", num_classes)
    device = model_device(model, device)
    d = num_classes * class_dim + shared_dim
    per_dim = torch.zeros(d, dtype=torch.float64, device=device)
    by_class = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    with eval_mode(model):
        for x, y in batches(data, batch_size, device):
            loc, scale = (t.double() for t in model.encode(x))
            kl = normal_kl(loc, scale)
            per_dim += kl.sum(0)
            blocks = kl[:, : num_classes * class_dim].reshape(-1, num_classes, class_dim).sum(-1)
            by_class.index_add_(0, y, blocks)
    n = len(labels)
    counts = torch.bincount(labels, minlength=num_classes).to(device=device, dtype=torch.float64)
    matrix = by_class / counts.clamp(min=1).unsqueeze(1)
    diag = matrix.diagonal()
    others = (matrix.sum(1) - diag) / (num_classes - 1)
    ratio = diag / others
    own = (by_class.diagonal().sum() / n).item()
    z_c = per_dim[: num_classes * class_dim].sum().item() / n
    present = counts > 0
    return {
        "per_dimension": (per_dim / n).cpu(),
        "class_matrix": matrix.cpu(),
        "z_c": z_c,
        "z_s": per_dim[num_classes * class_dim :].sum().item() / n,
        "z_cy": own,
        "z_c_other": (z_c - own) / (num_classes - 1),
        "diagonal_ratio": ratio.cpu(),
        "min_diagonal_ratio": ratio[present].min().item(),
    }
