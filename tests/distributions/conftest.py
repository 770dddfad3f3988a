"""The registry of distribution cases that ``test_distribution_contract.py`` runs its generic tests over.

In the style of Pyro's ``tests/distributions/conftest.py``: each custom distribution is registered as a few
:class:`Fixture` cases (constructor arguments, expected shapes and support, the flags the generic tests need, and
independent reference values), so that a new distribution costs one entry in :data:`FIXTURES`. The references
are written here from closed forms and scipy, never from the module under test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from pyro.distributions import constraints
from scipy import stats
from scipy.special import gammaln

from untwine.distributions import DirichletClassPrior, LpNestedSymmetric

F64 = torch.float64


class Reference(NamedTuple):
    """Independent values for one case: per-coordinate mean and variance (``batch + event``), the differential
    entropy (``batch``), ``log_prob(x)`` for values ``x`` of shape ``(N,) + batch + event``, and ``projections(x)``:
    one-dimensional statistics of ``x`` with their exact laws, as ``(label, values of shape (N,), scipy law)``."""

    mean: np.ndarray
    variance: np.ndarray
    entropy: np.ndarray
    log_prob: Callable[[np.ndarray], np.ndarray]
    projections: Callable[[np.ndarray], list[tuple[str, np.ndarray, Any]]]


@dataclass(frozen=True)
class Fixture:
    """One registered case of a distribution class.

    :param name: short description, the second half of the test id.
    :param dist_class: the ``TorchDistribution`` subclass.
    :param params: tensor-valued constructor arguments, as (nested lists of) numbers.
    :param static: the other constructor arguments (a tree, a number of classes).
    :param batch_shape: the batch shape the case must have.
    :param event_shape: the event shape the case must have.
    :param support: the support constraint the class must declare.
    :param has_rsample: whether samples are reparameterised (``rsample`` exists).
    :param has_entropy: whether ``entropy()`` is implemented.
    :param reference: ``reference(params, static)``, independent values from the parameters as float64 numpy arrays.
    """

    name: str
    dist_class: type
    params: dict[str, Any]
    static: dict[str, Any]
    batch_shape: tuple[int, ...]
    event_shape: tuple[int, ...]
    support: constraints.Constraint
    has_rsample: bool
    has_entropy: bool
    reference: Callable[[dict[str, np.ndarray], dict[str, Any]], Reference]

    @property
    def id(self) -> str:
        return f"{self.dist_class.__name__}-{self.name}"

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.params.items()}

    def tensors(self, dtype: torch.dtype = F64, requires_grad: bool = False) -> dict[str, torch.Tensor]:
        """Fresh leaf tensors of the parameters."""
        return {k: torch.tensor(v, dtype=dtype, requires_grad=requires_grad) for k, v in self.params.items()}

    def make(self, dtype: torch.dtype = F64, tensors: dict[str, torch.Tensor] | None = None, validate_args=True):
        """The distribution, from :meth:`tensors` unless ``tensors`` is given."""
        tensors = self.tensors(dtype) if tensors is None else tensors
        return self.dist_class(**self.static, **tensors, validate_args=validate_args)

    def expected_reference(self) -> Reference:
        return self.reference(self.numpy_params(), self.static)

    def point_inside(self, size: int, dtype: torch.dtype = F64) -> torch.Tensor:
        """A point of event size ``size`` inside the support (the wrong size is what some tests want)."""
        if self.support is constraints.simplex:
            return torch.full((size,), 1.0 / size, dtype=dtype)
        assert self.support is constraints.real_vector, self.support
        return torch.linspace(-1.0, 1.0, size, dtype=dtype)

    def point_outside(self, dtype: torch.dtype = F64) -> torch.Tensor:
        """A value of the right event shape outside the support (a real vector excludes only NaN)."""
        (size,) = self.event_shape
        if self.support is constraints.simplex:
            return torch.ones(size, dtype=dtype)
        assert self.support is constraints.real_vector, self.support
        return torch.full((size,), float("nan"), dtype=dtype)


def _batched(fn: Callable[..., tuple], batch: tuple[int, ...], *arrays: np.ndarray) -> list[np.ndarray]:
    """Apply ``fn`` to each batch element of ``arrays`` (already broadcast to ``batch + their own trailing dims``) and
    stack each of its outputs back into the batch shape."""
    outputs = [fn(*(a[idx] for a in arrays)) for idx in np.ndindex(batch)]
    return [np.stack([o[k] for o in outputs]).reshape(batch + np.shape(outputs[0][k])) for k in range(len(outputs[0]))]


# --- LpNestedSymmetric -------------------------------------------------------------------------------------------


def _lp_block_terms(p0: float, d: int, p: float, s: float) -> tuple[float, float, float]:
    r"""(log normaliser, mean of :math:`\|x\|_p^{p_0}/s`, per-coordinate variance) of the density on
    :math:`\mathbb{R}^d` proportional to :math:`\exp(-\|x\|_p^{p_0}/s)`.

    Polar coordinates for the :math:`L^p` norm: :math:`\int e^{-\|x\|_p^{p_0}/s} dx = S \int_0^\infty r^{d-1}
    e^{-r^{p_0}/s} dr` with the surface :math:`S = d\,(2\Gamma(1 + 1/p))^d / \Gamma(1 + d/p)` (``d`` times the
    volume of the unit :math:`L^p` ball) and the radial integral :math:`s^{d/p_0}\Gamma(d/p_0)/p_0` (substitute
    :math:`u = r^{p_0}/s`, so :math:`u \sim \mathrm{Gamma}(d/p_0, 1)` with mean :math:`d/p_0`). The variance is
    :math:`\mathbb{E}[R^2]\,\mathbb{E}[u_j^2]` for the independent radius and direction; the direction's moment is read
    off i.i.d. coordinates :math:`\propto e^{-|x_j|^p}`, where :math:`\mathbb{E}[x_j^2] = \Gamma(3/p)/\Gamma(1/p)`
    and :math:`\|x\|_p^p \sim \mathrm{Gamma}(d/p, 1)`.
    """
    log_surface = math.log(d) + d * (math.log(2.0) + gammaln(1.0 + 1.0 / p)) - gammaln(1.0 + d / p)
    log_z = log_surface + (d / p0) * math.log(s) + gammaln(d / p0) - math.log(p0)
    log_r2 = (2.0 / p0) * math.log(s) + gammaln((d + 2) / p0) - gammaln(d / p0)
    log_u2 = gammaln(3.0 / p) + gammaln(d / p) - gammaln(1.0 / p) - gammaln((d + 2) / p)
    return log_z, d / p0, math.exp(log_r2 + log_u2)


def lp_factorised_reference(blocks: Callable[[np.ndarray], list[tuple[int, float]]]):
    r"""Reference values of an Lp-nested density whose root factorises into independent blocks.

    :math:`f(z)^{p_0} = \sum_k v_{0,k}^{p_0}` sums over the root's children, so the density
    :math:`\propto \exp(-f(z)^{p_0}/s)` is a product over them: a leaf child is a one-dimensional block
    :math:`\propto e^{-|z_j|^{p_0}/s}`, and a child that is one inner node with exponent :math:`p` over ``d``
    coordinates is the block :math:`\propto e^{-\|z_k\|_p^{p_0}/s}` of :func:`_lp_block_terms`. Every block is
    symmetric under each coordinate's sign, so the mean is zero.

    :param blocks: maps one batch element's exponents (pre-order) to the ``(d, p)`` of each child of the root, in
        coordinate order.
    """

    def reference(params: dict[str, np.ndarray], static: dict[str, Any]) -> Reference:
        e, s = params["exponents"], params["scale"]
        batch = np.broadcast_shapes(e.shape[:-1], s.shape)
        e, s = np.broadcast_to(e, batch + e.shape[-1:]), np.broadcast_to(s, batch)

        def one(exps: np.ndarray, scale: float) -> tuple:
            p0 = float(exps[0])
            terms = [(d, _lp_block_terms(p0, d, float(p), float(scale))) for d, p in blocks(exps)]
            variance = np.concatenate([np.full(d, t[2]) for d, t in terms])
            entropy = sum(log_z + mean_power for _, (log_z, mean_power, _) in terms)
            return np.zeros_like(variance), variance, np.float64(entropy)

        mean, variance, entropy = _batched(one, batch, e, s)

        def log_prob(x: np.ndarray) -> np.ndarray:
            def one_lp(exps: np.ndarray, scale: float, xb: np.ndarray) -> tuple:
                p0, total, start = float(exps[0]), 0.0, 0
                for d, p in blocks(exps):
                    xk = np.abs(xb[..., start : start + d])
                    start += d
                    log_z = _lp_block_terms(p0, d, float(p), float(scale))[0]
                    total = total - (xk**p).sum(-1) ** (p0 / p) / scale - log_z
                return (total,)

            xb = np.moveaxis(np.broadcast_to(x, x.shape[:1] + batch + x.shape[-1:]), 0, -2)
            (out,) = _batched(one_lp, batch, e, s, xb)
            return np.moveaxis(out, -1, 0)

        def projections(x: np.ndarray) -> list[tuple[str, np.ndarray, Any]]:
            """Each block's ||z_k||_p^p0 / s is Gamma(d/p0, 1) (see :func:`_lp_block_terms`)."""
            out = []
            for idx in np.ndindex(batch):
                xb, exps, scale = x[(slice(None),) + idx], e[idx], float(s[idx])
                p0, start = float(exps[0]), 0
                for k, (d, p) in enumerate(blocks(exps)):
                    xk = np.abs(xb[:, start : start + d])
                    start += d
                    values = (xk**p).sum(-1) ** (p0 / p) / scale
                    out.append((f"batch {idx} block {k}", values, stats.gamma(d / p0)))
            return out

        return Reference(mean, variance, entropy, log_prob, projections)

    return reference


def _merged_middle_node(exps: np.ndarray) -> list[tuple[int, float]]:
    """Tree [1, [1, [2]]] with p1 = p0: v1^p0 = |z1|^p0 + v2^p0, so the middle node merges into the root and the
    blocks are z0, z1 and the 2-D node with exponent p2."""
    p0, p1, p2 = exps
    assert p1 == p0, "the closed form needs the middle exponent equal to the root's"
    return [(1, p0), (1, p0), (2, p2)]


LP_NESTED = [
    Fixture(
        name="lp-spherical-3d",
        dist_class=LpNestedSymmetric,
        params={"exponents": [1.5], "scale": 0.8},
        static={"tree": [3]},
        batch_shape=(),
        event_shape=(3,),
        support=constraints.real_vector,
        has_rsample=False,
        has_entropy=False,
        reference=lp_factorised_reference(lambda e: [(1, e[0])] * 3),
    ),
    Fixture(
        name="eq6-batch2",
        dist_class=LpNestedSymmetric,
        params={"exponents": [[1.3, 0.7], [3.0, 2.2]], "scale": [1.0, 0.6]},
        static={"tree": [1, [2]]},
        batch_shape=(2,),
        event_shape=(3,),
        support=constraints.real_vector,
        has_rsample=False,
        has_entropy=False,
        reference=lp_factorised_reference(lambda e: [(1, e[0]), (2, e[1])]),
    ),
    Fixture(
        name="isa-20d",
        dist_class=LpNestedSymmetric,
        params={"exponents": [2.1, 2.2, 0.9, 3.0, 2.2, 1.6], "scale": 1.0},
        static={"tree": [[4], [4], [4], [4], [4]]},
        batch_shape=(),
        event_shape=(20,),
        support=constraints.real_vector,
        has_rsample=False,
        has_entropy=False,
        reference=lp_factorised_reference(lambda e: [(4, p) for p in e[1:]]),
    ),
    Fixture(
        name="depth3-batch2x1",
        dist_class=LpNestedSymmetric,
        params={"exponents": [[[1.2, 1.2, 2.5]], [[2.0, 2.0, 0.8]]], "scale": 0.7},
        static={"tree": [1, [1, [2]]]},
        batch_shape=(2, 1),
        event_shape=(4,),
        support=constraints.real_vector,
        has_rsample=False,
        has_entropy=False,
        reference=lp_factorised_reference(_merged_middle_node),
    ),
]


# --- DirichletClassPrior -------------------------------------------------------------------------------------------


def dirichlet_reference(params: dict[str, np.ndarray], static: dict[str, Any]) -> Reference:
    """Moments, entropy and log-density of Dir(alpha 1_L) from ``scipy.stats.dirichlet``, per batch element."""
    alpha, num_classes = params["alpha"], static["num_classes"]
    batch = alpha.shape

    def one(a: float) -> tuple:
        conc = np.full(num_classes, float(a))
        return stats.dirichlet.mean(conc), stats.dirichlet.var(conc), np.float64(stats.dirichlet.entropy(conc))

    mean, variance, entropy = _batched(one, batch, alpha)

    def log_prob(x: np.ndarray) -> np.ndarray:
        xb = np.moveaxis(np.broadcast_to(x, x.shape[:1] + batch + x.shape[-1:]), 0, -2)

        def one_lp(a: float, xs: np.ndarray) -> tuple:
            return (stats.dirichlet.logpdf(xs.T, np.full(num_classes, float(a))),)

        (out,) = _batched(one_lp, batch, alpha, xb)
        return np.moveaxis(out, -1, 0)

    def projections(x: np.ndarray) -> list[tuple[str, np.ndarray, Any]]:
        """Each class probability of Dir(alpha 1_L) is Beta(alpha, (L - 1) alpha) (aggregation property)."""
        return [
            (f"batch {idx} class {k}", x[(slice(None),) + idx + (k,)], stats.beta(a, (num_classes - 1) * a))
            for idx in np.ndindex(batch)
            for a in [float(alpha[idx])]
            for k in range(num_classes)
        ]

    return Reference(mean, variance, entropy, log_prob, projections)


def _dirichlet_case(name: str, alpha: Any, num_classes: int) -> Fixture:
    return Fixture(
        name=name,
        dist_class=DirichletClassPrior,
        params={"alpha": alpha},
        static={"num_classes": num_classes},
        batch_shape=tuple(np.shape(alpha)),
        event_shape=(num_classes,),
        support=constraints.simplex,
        has_rsample=True,
        has_entropy=True,
        reference=dirichlet_reference,
    )


DIRICHLET = [
    _dirichlet_case("uniform-10-classes", 1.0, 10),  # N-VAE's default alpha_p = 1 on MNIST's ten classes
    _dirichlet_case("3-classes-batch3", [0.3, 1.0, 4.0], 3),
    _dirichlet_case("5-classes-batch2x1", [[0.6], [2.5]], 5),
]

FIXTURES: Sequence[Fixture] = [*LP_NESTED, *DIRICHLET]


@pytest.fixture(params=FIXTURES, ids=lambda case: case.id)
def dist_case(request) -> Fixture:
    """Every registered case in turn."""
    return request.param
