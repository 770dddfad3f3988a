r"""Lp-nested symmetric distributions (ISA-VAE paper, section 3.2, eqs. 6–11, appendix A.1).

An **Lp-nested function** is a tree of :math:`L^p` norms: each leaf is one coordinate :math:`|z_j|`, and each inner
node :math:`i` with exponent :math:`p_i` combines the values :math:`v_{i,1}, \dots, v_{i,l_i}` of its children as

.. math::

    v_i = \Big(\sum_{k=1}^{l_i} v_{i,k}^{\,p_i}\Big)^{1/p_i}, \qquad f(z) = v_0 \ \text{(the root)} .

Eq. 6 of the paper, :math:`(|z_1|^{p_0} + (|z_2|^{p_1} + |z_3|^{p_1})^{p_0/p_1})^{1/p_0}`, is the tree ``[1, [2]]``;
the ISA layout of eq. 9 (a root over :math:`l_0` subspaces, each an :math:`L^{p_k}` norm of its own coordinates) is
``[[n_1], [n_2], ..., [n_l]]``.

**Tree notation.** An inner node is a Python list of its children; a child is either a nested list (an inner node)
or a positive int ``m``, which stands for ``m`` leaf children (coordinates). Coordinates are numbered left to right.
Inner nodes are numbered in pre-order (the root is 0), and the ``exponents`` tensor lists :math:`p_i` in that order:

* ``[3]`` — one inner node over 3 coordinates: the :math:`L^p`-spherical family, exponents ``[p]``;
* ``[1, [2]]`` — eq. 6, exponents ``[p0, p1]``;
* ``[[4], [4], [4], [4], [4]]`` — the 20-D ISA layout of the paper's dSprites runs, exponents ``[p0, p1, ..., p5]``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import Distribution

Spec = Sequence[Any]


class LpNestedTreeError(ValueError):
    """An Lp-nested tree specification is malformed; the message says where."""


@dataclass(frozen=True)
class _TreeIndex:
    """Integer tensors describing a tree, on one device (see :class:`LpNestedTree`)."""

    leaf_parent: torch.Tensor  # (n,) inner node owning each coordinate
    edge_parent: torch.Tensor  # (E,) parent (inner node) of each non-root node, leaves then inner nodes
    edge_size: torch.Tensor  # (E,) leaves under that child
    node_size: torch.Tensor  # (m,) leaves under each inner node, n_i
    node_children: torch.Tensor  # (m,) number of children, l_i
    levels: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per depth >= 1, deepest first: (nodes, their parents)
    leaf_path: torch.Tensor  # (n, depth_max) edges from the root down to each leaf, padded with index E


class LpNestedTree:
    """The structure of an Lp-nested function, parsed from the list notation of the module docstring.

    :param spec: nested lists; ints are counts of leaf children. The root must be a list.
    :raises LpNestedTreeError: for an empty node, a non-positive or non-integer count, or a non-list root.

    Attributes: ``num_leaves`` (:math:`n`, the event size), ``num_inner`` (:math:`m`, the number of exponents),
    ``depth`` (levels of inner nodes), ``spec`` (the normalised notation, a tuple).
    """

    def __init__(self, spec: Spec):
        if isinstance(spec, LpNestedTree):
            spec = spec.spec
        if not isinstance(spec, (list, tuple)):
            raise LpNestedTreeError(
                f"the root of an Lp-nested tree must be a list of children, got {spec!r}; "
                "for example [[4], [4]] for two 4-dimensional subspaces"
            )
        leaf_parent: list[int] = []
        inner_parent: list[int] = []  # parent of each inner node (-1 for the root)
        depth: list[int] = []
        node_size: list[int] = []
        node_children: list[int] = []

        def visit(node: Spec, parent: int, level: int, where: str) -> int:
            index = len(inner_parent)
            inner_parent.append(parent)
            depth.append(level)
            node_size.append(0)
            node_children.append(0)
            if len(node) == 0:
                raise LpNestedTreeError(f"inner node {where} has no children; give it a leaf count or a subtree")
            size = children = 0
            for k, child in enumerate(node):
                if isinstance(child, (list, tuple)):
                    size += visit(child, index, level + 1, f"{where}[{k}]")
                    children += 1
                elif isinstance(child, int) and not isinstance(child, bool) and child >= 1:
                    leaf_parent.extend([index] * child)
                    size += child
                    children += child
                else:
                    raise LpNestedTreeError(
                        f"child {where}[{k}] is {child!r}; a child is a positive int (that many coordinates) "
                        "or a list (an inner node)"
                    )
            node_size[index] = size
            node_children[index] = children
            return size

        visit(spec, -1, 0, "root")

        def normalise(node: Spec) -> tuple:
            return tuple(normalise(c) if isinstance(c, (list, tuple)) else int(c) for c in node)

        self.spec = normalise(spec)
        self.num_leaves = len(leaf_parent)
        self.num_inner = len(inner_parent)
        self.depth = max(depth) + 1
        self._leaf_parent = leaf_parent
        self._inner_parent = inner_parent
        self._node_depth = depth
        self._node_size = node_size
        self._node_children = node_children
        self._index: dict[torch.device, _TreeIndex] = {}

    def __repr__(self) -> str:
        return f"LpNestedTree({list(self.spec)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LpNestedTree) and other.spec == self.spec

    def __hash__(self) -> int:
        return hash(self.spec)

    def subspaces(self) -> list[list[int]]:
        """Coordinates under each child of the root, in order (the independent subspaces :math:`\\mathcal{V}_i`)."""
        groups: list[list[int]] = []
        owner = {}  # inner node -> child of the root it descends from
        for i in range(1, self.num_inner):
            parent = self._inner_parent[i]
            owner[i] = i if parent == 0 else owner[parent]
        current = None
        for j, parent in enumerate(self._leaf_parent):
            key = ("leaf", j) if parent == 0 else ("node", owner[parent])
            if key != current:
                groups.append([])
                current = key
            groups[-1].append(j)
        return groups

    def index(self, device: torch.device | str = "cpu") -> _TreeIndex:
        """The tree as integer tensors on ``device`` (built once per device, then cached)."""
        device = torch.device(device)
        if device not in self._index:
            self._index[device] = self._build_index(device)
        return self._index[device]

    def _build_index(self, device: torch.device) -> _TreeIndex:
        n, m = self.num_leaves, self.num_inner
        inner_edges = list(range(1, m))
        edge_parent = self._leaf_parent + [self._inner_parent[i] for i in inner_edges]
        edge_size = [1] * n + [self._node_size[i] for i in inner_edges]
        edge_of_inner = {i: n + k for k, i in enumerate(inner_edges)}

        def path_to(node: int) -> list[int]:
            path = []
            while node != 0:
                path.append(edge_of_inner[node])
                node = self._inner_parent[node]
            return path[::-1]

        pad = len(edge_parent)  # points at an extra zero so that paths of different lengths stack
        leaf_path = []
        for j in range(n):
            path = path_to(self._leaf_parent[j]) + [j]
            leaf_path.append(path + [pad] * (self.depth - len(path)))
        levels = []
        for level in range(self.depth - 1, 0, -1):
            nodes = [i for i in range(m) if self._node_depth[i] == level]
            parents = [self._inner_parent[i] for i in nodes]
            levels.append((torch.tensor(nodes, device=device), torch.tensor(parents, device=device)))

        def as_long(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        return _TreeIndex(
            leaf_parent=as_long(self._leaf_parent),
            edge_parent=as_long(edge_parent),
            edge_size=as_long(edge_size),
            node_size=as_long(self._node_size),
            node_children=as_long(self._node_children),
            levels=tuple(levels),
            leaf_path=as_long(leaf_path),
        )


def _as_tensor(value: Any, like: torch.Tensor | None = None, name: str = "value") -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name} must be a number or a tensor of numbers, got {value!r} ({err})") from None


def _check_positive_finite(name: str, value: torch.Tensor, what: str = "") -> None:
    """A one-line error naming the parameter and its bad values (torch's constraint check passes inf)."""
    bad = ~(torch.isfinite(value) & (value > 0))
    if bool(bad.any()):
        shown = value.detach()[bad].flatten()[:4].tolist()
        raise ValueError(f"{name} must be positive and finite{what}, got {shown[0] if value.dim() == 0 else shown}")


@functools.lru_cache(maxsize=64)
def _cached_tree(spec: tuple) -> LpNestedTree:
    return LpNestedTree(spec)


def as_tree(tree: LpNestedTree | Spec) -> LpNestedTree:
    """``tree`` itself, or the tree of a list notation; equal notations share one tree, so its per-device index
    tensors are built once even when a distribution is rebuilt from the notation in every step."""
    if isinstance(tree, LpNestedTree):
        return tree
    try:
        return _cached_tree(_freeze(tree))
    except TypeError:  # unhashable or malformed: let the parser say what is wrong
        return LpNestedTree(tree)


def _freeze(spec: Any) -> Any:
    if isinstance(spec, (list, tuple)):
        return tuple(_freeze(c) for c in spec)
    if type(spec) is not int:  # 2.0 and True equal 2 and 1 as cache keys; the parser must see (and reject) them
        raise TypeError(f"not a leaf count: {spec!r}")
    return spec


class LpNestedSymmetric(TorchDistribution):
    r"""Lp-nested symmetric distribution with the radial law that makes the root's subtrees independent.

    For an Lp-nested function :math:`f` over :math:`n` coordinates (eqs. 6, 9) the density of eq. 7 is
    :math:`\rho(z) = \psi_0(f(z)) / (f(z)^{n-1} \mathcal{S}_f(1))`, with the surface area of the unit sphere (eq. 8,
    the product running over every inner node :math:`i` with :math:`l_i` children, :math:`n_i` leaves below it and
    :math:`n_{i,k}` below its :math:`k`-th child)

    .. math::

        \mathcal{S}_f(1) = 2^n \prod_{i \in \text{inner}}
            \frac{\prod_{k=1}^{l_i} \Gamma(n_{i,k}/p_i)}{p_i^{\,l_i - 1}\, \Gamma(n_i/p_i)},

    and the radial density of eq. 11, :math:`\psi_0(v) = p_0 v^{n-1} \exp(-v^{p_0}/s) / (\Gamma(n/p_0) s^{n/p_0})`,
    i.e. :math:`f(z)^{p_0} \sim \mathrm{Gamma}(n/p_0, \text{scale } s)`. The :math:`v^{n-1}` of :math:`\psi_0` cancels
    the :math:`f^{n-1}` of eq. 7, so ``log_prob`` evaluates the simplified and everywhere finite form

    .. math::

        \log \rho(z) = \log p_0 - \frac{f(z)^{p_0}}{s} - \log\Gamma\Big(\frac{n}{p_0}\Big) - \frac{n}{p_0}\log s
            - \log \mathcal{S}_f(1),

    with :math:`f(z)^{p_0} = \sum_k v_{0,k}^{p_0}` computed bottom-up from :math:`g_i = v_i^{p_i}` (never taking a
    root of zero), so :math:`z = 0` has a finite density and gradients reach every exponent.

    **What** ``scale`` **means.** :math:`s` is the Gamma scale of :math:`f(z)^{p_0}`. With every exponent 2 the
    density is :math:`\propto \exp(-\|z\|^2/s)`: :math:`s = 2` gives exactly :math:`\mathcal{N}(0, I)` and
    :math:`s = 1` gives :math:`\mathcal{N}(0, I/2)`. With a single level and every exponent :math:`p` it is the
    product of generalised normals :math:`\propto \exp(-|z_j|^p / s)` (ICA prior, eq. 5 with :math:`\tau = 1/s`).
    Per-coordinate variances are :attr:`variance`.

    **Sampling** is exact (Sinz & Bethge, Algorithm 1 of the paper's appendix A.1), vectorised over the sample
    shape: :math:`f(z)^{p_0}` from its Gamma law; for each inner node a Dirichlet
    :math:`(n_{i,1}/p_i, \dots, n_{i,l_i}/p_i)` split of :math:`v_i^{p_i}` among its children, drawn for all nodes
    at once as normalised Gammas; each coordinate is the radius times the product of :math:`D^{1/p_i}` along its
    path; then independent random signs. Samples are not reparameterised (``has_rsample = False``); training a VAE
    only samples the Gaussian posterior (eq. 12).

    :param tree: an :class:`LpNestedTree` or its list notation (see the module docstring).
    :param exponents: :math:`p_i > 0`, shape ``batch_shape + (num_inner,)`` in the tree's pre-order; may require
        grad (learned exponents).
    :param scale: :math:`s > 0`, shape broadcastable to ``batch_shape``; may require grad.

    Reference: Stühmer, Turner & Nowozin, "Independent Subspace Analysis for Unsupervised Learning of Disentangled
    Representations", eqs. 6–11 and Algorithm 1; Sinz & Bethge (2010), "Lp-nested symmetric distributions".
    """

    arg_constraints = {
        "exponents": constraints.independent(constraints.positive, 1),
        "scale": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        tree: LpNestedTree | Spec,
        exponents: torch.Tensor | Sequence[float],
        scale: torch.Tensor | float = 1.0,
        validate_args: bool | None = None,
    ):
        self.tree = as_tree(tree)
        exponents = _as_tensor(exponents, scale if isinstance(scale, torch.Tensor) else None, "exponents")
        if exponents.dim() == 0 or exponents.shape[-1] != self.tree.num_inner:
            raise ValueError(
                f"the tree {list(self.tree.spec)} has {self.tree.num_inner} inner nodes, so exponents needs "
                f"{self.tree.num_inner} values in its last dimension (pre-order, root first); "
                f"got shape {tuple(exponents.shape)}"
            )
        scale = _as_tensor(scale, exponents, "scale")
        try:
            batch_shape = torch.broadcast_shapes(exponents.shape[:-1], scale.shape)
        except RuntimeError:
            raise ValueError(
                f"scale of shape {tuple(scale.shape)} does not broadcast with the batch shape "
                f"{tuple(exponents.shape[:-1])} of exponents {tuple(exponents.shape)} (last dimension: the tree's)"
            ) from None
        self.exponents = exponents.expand(batch_shape + exponents.shape[-1:])
        self.scale = scale.expand(batch_shape)
        # checked here (a host sync) only when validating: training builds the prior in every step, unvalidated
        if validate_args if validate_args is not None else Distribution._validate_args:
            _check_positive_finite("exponents", self.exponents, " (one per inner node, root first)")
            _check_positive_finite("scale", self.scale)
        super().__init__(batch_shape, torch.Size([self.tree.num_leaves]), validate_args=validate_args)

    @classmethod
    def isa(
        cls,
        p0: torch.Tensor | float,
        exponents: torch.Tensor | Sequence[float],
        sizes: Sequence[int],
        scale: torch.Tensor | float = 1.0,
        validate_args: bool | None = None,
    ) -> LpNestedSymmetric:
        r"""The ISA layout of eq. 9: a root with exponent ``p0`` over one subspace per entry of ``sizes``.

        .. math::

            f(z) = \Big(\sum_{k=1}^{l_0} \big(\textstyle\sum_{j \in \mathcal{V}_k} |z_j|^{p_k}\big)^{p_0/p_k}
                \Big)^{1/p_0}

        :param p0: root exponent (the paper: 2.1).
        :param exponents: one exponent per subspace, shape ``batch_shape + (len(sizes),)`` (the paper: 2.2 each).
        :param sizes: coordinates per subspace :math:`|\mathcal{V}_k|` (the paper's dSprites runs: five of 4).
        """
        given = list(sizes)
        if not given:
            raise LpNestedTreeError("sizes is empty; give the number of coordinates of each subspace")
        try:
            if any(isinstance(s, bool) for s in given):
                raise TypeError
            sizes = [operator.index(s) for s in given]  # ints and NumPy integers, not 1.5 or "4"
        except TypeError:
            raise LpNestedTreeError(f"subspace sizes must be positive integers, got {given!r}") from None
        if min(sizes) < 1:
            raise LpNestedTreeError(f"subspace sizes must be positive integers, got {given!r}")
        exps = _as_tensor(exponents, p0 if isinstance(p0, torch.Tensor) else None, "exponents")
        if exps.dim() == 0 or exps.shape[-1] != len(sizes):
            raise ValueError(f"{len(sizes)} subspaces need {len(sizes)} exponents; got shape {tuple(exps.shape)}")
        root = _as_tensor(p0, exps)
        batch = torch.broadcast_shapes(root.shape, exps.shape[:-1])
        root, exps = root.expand(batch).unsqueeze(-1), exps.expand(batch + exps.shape[-1:])
        return cls([[s] for s in sizes], torch.cat([root, exps], -1), scale, validate_args=validate_args)

    def expand(self, batch_shape: torch.Size | Sequence[int], _instance=None) -> LpNestedSymmetric:
        new = self._get_checked_instance(LpNestedSymmetric, _instance)
        batch_shape = torch.Size(batch_shape)
        new.tree = self.tree
        new.exponents = self.exponents.expand(batch_shape + self.exponents.shape[-1:])
        new.scale = self.scale.expand(batch_shape)
        super(LpNestedSymmetric, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    # --- the Lp-nested function --------------------------------------------------------------------
    def _root_power(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`f(z)^{p_0}`, shape ``broadcast(z.shape[:-1], batch_shape)``, from :math:`g_i = v_i^{p_i}`."""
        idx = self.tree.index(z.device)
        p = self.exponents
        leaf_terms = z.abs().pow(p[..., idx.leaf_parent])  # |z_j|^{p_parent(j)}
        g = leaf_terms.new_zeros(leaf_terms.shape[:-1] + (self.tree.num_inner,))
        g = g.index_add(-1, idx.leaf_parent, leaf_terms)
        for nodes, parents in idx.levels:  # deepest inner nodes first; each level adds g_c^{p_parent / p_c}
            base = g[..., nodes]
            # A zero subtree contributes 0 with zero gradient; pow's derivative r g^(r-1) is inf there for r < 1,
            # and inf * 0 would turn every gradient into NaN, so the pow only sees positive bases.
            positive = base > 0
            terms = torch.where(positive, base.where(positive, 1.0).pow(p[..., parents] / p[..., nodes]), 0.0)
            g = g.index_add(-1, parents, terms)
        return g[..., 0]

    def lp_nested_norm(self, z: torch.Tensor) -> torch.Tensor:
        """The value :math:`f(z)` of the Lp-nested function (eqs. 6, 9)."""
        return self._root_power(z).pow(self.exponents[..., 0].reciprocal())

    def log_surface_area(self) -> torch.Tensor:
        r""":math:`\log \mathcal{S}_f(1)` of eq. 8, shape ``batch_shape``."""
        idx = self.tree.index(self.exponents.device)
        p = self.exponents
        dtype = p.dtype
        children = torch.lgamma(idx.edge_size.to(dtype) / p[..., idx.edge_parent]).sum(-1)
        nodes = (idx.node_children.to(dtype) - 1) * p.log() + torch.lgamma(idx.node_size.to(dtype) / p)
        return self.tree.num_leaves * math.log(2.0) + children - nodes.sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        elif value.shape[-1:] != self.event_shape:  # a shape check costs no sync, so it stays on in training
            raise ValueError(
                f"value must end in the event size {self.tree.num_leaves} of the tree, got shape {tuple(value.shape)}"
            )
        p0 = self.exponents[..., 0]
        n = self.tree.num_leaves
        log_norm = p0.log() - torch.lgamma(n / p0) - (n / p0) * self.scale.log() - self.log_surface_area()
        return log_norm - self._root_power(value) / self.scale

    # --- sampling (Algorithm 1) -------------------------------------------------------------------
    def sample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)  # sample + batch + (n,)
        batch = shape[:-1]
        idx = self.tree.index(self.exponents.device)
        with torch.no_grad():
            # Per-node quantities are computed on the (small) batch shape, then expanded to the sample shape.
            p = self.exponents.detach()
            n = self.tree.num_leaves
            p0 = p[..., 0].expand(batch)
            radius_power = torch._standard_gamma(n / p0) * self.scale.detach()  # f(z)^{p0} ~ Gamma(n/p0, scale s)
            log_radius = radius_power.log() / p0
            # One Gamma per child of every inner node; normalising per parent gives the node's Dirichlet.
            edge_p = p[..., idx.edge_parent]
            gam = torch._standard_gamma((idx.edge_size.to(p.dtype) / edge_p).expand(batch + edge_p.shape[-1:]))
            totals = gam.new_zeros(batch + (self.tree.num_inner,)).index_add_(-1, idx.edge_parent, gam)
            log_share = (gam.log() - totals[..., idx.edge_parent].log()) / edge_p  # log D^{1/p_parent}
            log_share = torch.cat([log_share, log_share.new_zeros(batch + (1,))], -1)  # the padding edge
            log_abs = log_radius.unsqueeze(-1) + log_share[..., idx.leaf_path].sum(-1)
            signs = torch.rand(shape, dtype=p.dtype, device=p.device) < 0.5
            return torch.where(signs, -1.0, 1.0).to(p.dtype) * log_abs.exp()

    # --- moments ------------------------------------------------------------------------------------
    @property
    def mean(self) -> torch.Tensor:
        return self.exponents.new_zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self) -> torch.Tensor:
        r"""Per-coordinate variance in closed form, from the independent pieces of the sampler:

        .. math::

            \mathbb{E}[z_j^2] = s^{2/p_0} \frac{\Gamma((n + 2)/p_0)}{\Gamma(n/p_0)}
            \prod_{(i \to k) \in \text{path}(j)} \frac{\Gamma(a_{ik} + 2/p_i)\, \Gamma(A_i)}
            {\Gamma(a_{ik})\, \Gamma(A_i + 2/p_i)}, \qquad a_{ik} = n_{i,k}/p_i, \ A_i = n_i/p_i,

        the moments of the radius and of the Beta marginals of each Dirichlet on the path from the root to
        :math:`z_j`.
        """
        idx = self.tree.index(self.exponents.device)
        p = self.exponents
        n = self.tree.num_leaves
        p0 = p[..., 0]
        log_radius2 = (2 / p0) * self.scale.log() + torch.lgamma((n + 2) / p0) - torch.lgamma(n / p0)
        edge_p = p[..., idx.edge_parent]
        a = idx.edge_size.to(p.dtype) / edge_p
        big_a = idx.node_size.to(p.dtype)[idx.edge_parent] / edge_p
        t = 2 / edge_p
        log_edge = torch.lgamma(a + t) + torch.lgamma(big_a) - torch.lgamma(a) - torch.lgamma(big_a + t)
        log_edge = torch.cat([log_edge, log_edge.new_zeros(log_edge.shape[:-1] + (1,))], -1)
        return (log_radius2.unsqueeze(-1) + log_edge[..., idx.leaf_path].sum(-1)).exp()
