r"""The Dirichlet class prior of N-VAE (Antorán & Miguel 2019, section III-B) and its conjugate update.

Class probabilities :math:`\pi` on the simplex :math:`\Delta^{L-1}` have the symmetric Dirichlet prior
:math:`p(\pi) = \mathrm{Dir}(\pi; \alpha_p \mathbf{1}_L)` and a label is :math:`y \sim \mathrm{Cat}(\pi)`. The prior is
conjugate, so observing :math:`y` gives

.. math::

    p(\pi \mid y) = \mathrm{Dir}(\pi; \alpha_p \mathbf{1}_L + c_y), \qquad
    p(y) = \int \pi_y \, p(\pi)\, d\pi = \frac{\alpha_p}{L \alpha_p} = \frac{1}{L},

with :math:`c_y` the one-hot label. N-VAE's exact bound (eq. 3) contains
:math:`-\mathrm{KL}(q(\pi \mid x) \,\|\, p(\pi \mid y)) + \log p(y)`, which equals
:math:`\mathbb{E}_{q(\pi \mid x)}[\log p(y \mid \pi)] - \mathrm{KL}(q(\pi \mid x) \,\|\, p(\pi))` (appendix A); the
model can therefore score :math:`\pi` under the conjugate posterior directly and let ``TraceMeanField_ELBO`` use the
closed-form Dirichlet–Dirichlet KL

.. math::

    \mathrm{KL}(\mathrm{Dir}(a) \,\|\, \mathrm{Dir}(b)) = \log\Gamma(a_0) - \sum_k \log\Gamma(a_k) - \log\Gamma(b_0)
        + \sum_k \log\Gamma(b_k) + \sum_k (a_k - b_k)\big(\psi(a_k) - \psi(a_0)\big),

:math:`a_0 = \sum_k a_k`, which torch registers for every ``Dirichlet`` pair (subclasses included).
"""

from __future__ import annotations

import math
import operator

import torch
from pyro.distributions import Dirichlet, constraints
from torch.distributions import Distribution
from torch.nn import functional as F


class DirichletClassPrior(Dirichlet):
    r"""Symmetric Dirichlet :math:`\mathrm{Dir}(\alpha_p \mathbf{1}_L)` on class probabilities; conjugate update.

    A ``Dirichlet`` whose concentration is :math:`\alpha_p` in every one of the ``num_classes`` coordinates, so the
    KL registered for Dirichlet pairs, ``expand``, sampling (reparameterised) and ``log_prob`` are all Dirichlet's.

    :param alpha: :math:`\alpha_p > 0`, a scalar or a tensor of batch shape (may require grad).
    :param num_classes: :math:`L \ge 2`.
    """

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1)}

    def __init__(self, alpha: torch.Tensor | float, num_classes: int, validate_args: bool | None = None):
        try:
            if isinstance(num_classes, bool):
                raise TypeError
            num_classes = operator.index(num_classes)  # ints and NumPy integers, not floats or strings
        except TypeError:
            raise ValueError(f"num_classes must be an integer, got {num_classes!r}") from None
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        alpha = torch.as_tensor(alpha, dtype=alpha.dtype if isinstance(alpha, torch.Tensor) else None)
        if not alpha.is_floating_point():
            alpha = alpha.to(torch.get_default_dtype())
        if validate_args if validate_args is not None else Distribution._validate_args:
            bad = ~(torch.isfinite(alpha) & (alpha > 0))
            if bool(bad.any()):  # torch's own constraint check lets inf through
                shown = alpha.detach()[bad].flatten()[:4].tolist()
                raise ValueError(f"alpha (the Dirichlet concentration) must be positive and finite, got {shown}")
        self.alpha = alpha
        self.num_classes = num_classes
        super().__init__(alpha.unsqueeze(-1).expand(alpha.shape + (num_classes,)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> DirichletClassPrior:
        new = self._get_checked_instance(DirichletClassPrior, _instance)
        batch_shape = torch.Size(batch_shape)
        new.alpha = self.alpha.expand(batch_shape)
        new.num_classes = self.num_classes
        Dirichlet.__init__(new, self.concentration.expand(batch_shape + self.event_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _check_labels(self, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(y, torch.Tensor):
            try:
                y = torch.as_tensor(y, device=self.concentration.device)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"class labels must be a tensor of integers, got {y!r}") from None
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"class labels must be integers, got dtype {y.dtype}")
        if self._validate_args or not y.is_cuda:  # a range check on a GPU would wait for the device
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                unlabelled = " (-1 marks an unlabelled image, which has no conjugate update: leave those out)"
                raise ValueError(
                    f"class labels must lie in [0, {self.num_classes}), got values from {int(y.min())} to "
                    f"{int(y.max())}; relabel the data or set num_classes to the number of classes"
                    + (unlabelled if int(y.min()) == -1 else "")
                )
        return y

    def posterior(self, y: torch.Tensor) -> Dirichlet:
        r""":math:`p(\pi \mid y) = \mathrm{Dir}(\alpha_p \mathbf{1}_L + c_y)`, batched over a tensor of labels.

        :param y: integer labels in ``[0, L)`` of any shape ``S``; the result has batch shape
            ``broadcast(S, batch_shape)``.
        """
        y = self._check_labels(y)
        try:
            torch.broadcast_shapes(y.shape, self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"labels of shape {tuple(y.shape)} do not broadcast with the prior's batch shape "
                f"{tuple(self.batch_shape)}"
            ) from None
        one_hot = F.one_hot(y.long(), self.num_classes).to(self.concentration.dtype)
        # alpha + counts is positive whenever alpha is (checked with the prior); torch's re-check would also fail on an
        # empty batch of labels, which has no elements to reshape
        posterior = Dirichlet(self.concentration + one_hot, validate_args=False)
        posterior._validate_args = self._validate_args  # values given to log_prob are still checked
        return posterior

    def log_marginal(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(y) = \log \mathbb{E}_{p(\pi)}[\pi_y] = -\log L` for every label of ``y`` (symmetric prior)."""
        y = self._check_labels(y)
        return torch.full(y.shape, -math.log(self.num_classes), dtype=self.concentration.dtype, device=y.device)
