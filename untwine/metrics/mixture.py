r"""Log-densities of diagonal-Gaussian mixtures with one component per data point, over a whole dataset.

The aggregate posterior of a dataset of :math:`N` images is the mixture :math:`q(z) = \frac{1}{N}\sum_{n=1}^N q(z \mid
x_n)`; the β-TCVAE decomposition (:mod:`untwine.metrics.decomposition`) and the sampling MIG
(:mod:`untwine.metrics.mutual_info_gap`) score samples against **all** :math:`N` components of it (or of its
restriction to the images that share a factor value), never a minibatch. :func:`full_aggregate_log_density` does that
at a cost of :math:`O(S N D)` for :math:`S` samples in :math:`D` dimensions, in blocks with a running sum, so memory
stays bounded: beyond the ``(N, D)`` posteriors, full dSprites (:math:`N = 737{,}280`) needs a few MB of blocks on a
CPU and under 1 GB on a GPU, never an :math:`N \times N` matrix. Its docstring gives the numerics (a fixed shift per
mixture, clamped exponents, float64 accumulation, exact recomputation of rows far in every tail, a compiled CPU
kernel).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# Elements of one (samples x dims x components) block. On a CPU, blocks that stay in cache are ~2x faster than
# large ones (measured: 0.5M elements run at ~340 M/s on one core, 20M at ~80 M/s); a GPU wants large blocks so
# that kernel launches do not dominate.
_CPU_CHUNK_ELEMENTS = 2**19
_GPU_CHUNK_ELEMENTS = 2**26
_COMPONENT_CHUNK = 2048
# The compiled CPU kernel works on blocks of this many samples x components (padded to whole blocks, so one
# compilation serves every call) once a call has at least _COMPILE_MIN_ELEMENTS (samples x components x dims): below
# that, eager blocks finish in about the time a first compilation takes.
_COMPILED_SAMPLES = 256
_COMPILED_COMPONENTS = 2048
_COMPILE_MIN_ELEMENTS = 2**31
# Coordinate term of a padding component: far below any real one, so it is clamped and adds at most exp(lo).
_PAD_TERM = -1e4
_log = logging.getLogger(__name__)


def _chunk_elements(device: torch.device, chunk_elements: int | None) -> int:
    if chunk_elements is not None:
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        return int(chunk_elements)
    return _GPU_CHUNK_ELEMENTS if device.type == "cuda" else _CPU_CHUNK_ELEMENTS


def _group_matrix(groups: Sequence[Sequence[int]], d: int, like: torch.Tensor) -> torch.Tensor:
    """``(K, D)`` 0/1 membership of each coordinate in each group, with a clear error for bad groups."""
    member = torch.zeros(len(groups), d, dtype=like.dtype, device=like.device)
    if len(groups) == 0:
        raise ValueError("groups is empty; give at least one list of coordinates")
    for k, group in enumerate(groups):
        index = [int(j) for j in group]
        if not index or min(index) < 0 or max(index) >= d or len(set(index)) != len(index):
            raise ValueError(f"group {k} = {list(group)} must list distinct coordinates in [0, {d})")
        member[k, index] = 1.0
    return member


def _log_tiny(dtype: torch.dtype) -> float:
    """A little above the log of the smallest normal number of ``dtype``: exp() below it is subnormal or 0, which is
    both imprecise and (on CPUs) an order of magnitude slower, so shifted terms are clamped to it."""
    return math.log(torch.finfo(dtype).tiny) + 0.5


def _block_sums(
    z: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    cc: torch.Tensor,
    kappa_joint: torch.Tensor,
    member: torch.Tensor | None,
    kappa_groups: torch.Tensor | None,
    lo: float,
    joint: bool,
    marginals: bool,
    fused: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""Shifted sums :math:`\sum_n e^{L_{snh} - m_h}` of one block, see :func:`full_aggregate_log_density`.

    ``z`` ``(g, s, D)``; ``a`` (:math:`\sqrt{1/2}/\sigma`), ``b`` (:math:`\mu`), ``cc`` (shifted :math:`c`)
    ``(g, D, c)``; ``kappa_joint`` ``(g,)``; ``member`` ``(K, D)`` and
    ``kappa_groups`` ``(g, K)`` or ``None``. ``fused`` writes the group sums as a broadcast product, which the
    compiler fuses into one loop; eagerly an einsum is cheaper.
    """
    # z - mu first: z * a - mu * a would cancel catastrophically when |mu| / sigma is large (near-deterministic
    # posteriors far from 0). The coordinate term minus its shift is then one multiply-add.
    t = (z.unsqueeze(-1) - b.unsqueeze(1)).mul_(a.unsqueeze(1))  # (g, s, D, c)
    lp = torch.addcmul(cc.unsqueeze(1), t, t, value=-1.0)
    out_j = out_m = None
    if joint:
        out_j = (lp.sum(-2) + kappa_joint[:, None, None]).clamp_min_(lo).exp_().sum(-1)
    if marginals:
        if member is not None:
            if fused:
                lp = (lp.unsqueeze(2) * member[:, :, None]).sum(3)
            else:
                lp = torch.einsum("gsdc,kd->gskc", lp, member)
            lp = lp + kappa_groups[:, None, :, None]
        out_m = lp.clamp_min_(lo).exp_().sum(-1)
    return out_j, out_m


_COMPILED: dict[str, object] = {}


def _compiled_block_sums():
    """The fused kernel (``torch.compile`` of :func:`_block_sums`), or ``None`` where compiling failed before."""
    if "broken" in _COMPILED:
        return None
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_block_sums, dynamic=False, fullgraph=True)
    return _COMPILED["fn"]


def _block_shape(budget: int, g_total: int, s_total: int, n_total: int, d: int) -> tuple[int, int, int]:
    """Mixtures, samples and components per eager block, so that one ``(g, s, D, c)`` block holds about ``budget``
    elements: components first (up to ``_COMPONENT_CHUNK``), then samples, then mixtures."""
    c = min(n_total, _COMPONENT_CHUNK, max(1, budget // d))
    s = min(s_total, max(1, budget // (d * c)))
    g = min(g_total, max(1, budget // (s * d * c)))
    return g, s, c


def _exact_log_sums(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    joint: bool,
    marginals: bool,
    budget: int,
    member: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``logsumexp`` over components of ``(G, S, D)`` samples with a per-row maximum (no fixed shift): slower, but
    exact for samples whose every term is far below the shift (far in the tails of all components)."""
    g_total, s_total, d = z.shape
    n_total = loc.shape[1]
    loc_t = loc.transpose(1, 2).contiguous()
    inv_t = scale.reciprocal().transpose(1, 2).contiguous()
    const_t = (-scale.log() - HALF_LOG_2PI).transpose(1, 2).contiguous()
    g, s, c = _block_shape(budget, g_total, s_total, n_total, d)
    out_joint = z.new_empty(g_total, s_total) if joint else None
    out_marg = z.new_empty(g_total, s_total, d if member is None else len(member)) if marginals else None
    for g0 in range(0, g_total, g):
        gs = slice(g0, g0 + g)
        for s0 in range(0, s_total, s):
            ss = slice(s0, s0 + s)
            zc = z[gs, ss].unsqueeze(-1)  # (g, s, D, 1)
            acc_j = acc_m = None
            for c0 in range(0, n_total, c):
                cs = slice(c0, c0 + c)
                lp = (zc - loc_t[gs, None, :, cs]).mul_(inv_t[gs, None, :, cs])
                lp = lp.square_().mul_(-0.5).add_(const_t[gs, None, :, cs])  # (g, s, D, c)
                if joint:
                    block = torch.logsumexp(lp.sum(-2), dim=-1)
                    acc_j = block if acc_j is None else torch.logaddexp(acc_j, block)
                if marginals:
                    grouped = lp if member is None else torch.einsum("gsdc,kd->gskc", lp, member)
                    block = torch.logsumexp(grouped, dim=-1)
                    acc_m = block if acc_m is None else torch.logaddexp(acc_m, block)
            if joint:
                out_joint[gs, ss] = acc_j
            if marginals:
                out_marg[gs, ss] = acc_m
    return out_joint, out_marg


@torch.no_grad()
def full_aggregate_log_density(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    joint: bool = True,
    marginals: bool = True,
    chunk_elements: int | None = None,
    groups: Sequence[Sequence[int]] | None = None,
    compiled: bool | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    r"""Exact log-density of samples under the aggregate posterior of a whole dataset.

    With diagonal-Gaussian posteriors :math:`q(z \mid x_n) = \mathcal{N}(\mu_n, \operatorname{diag}\sigma_n^2)`,

    .. math::

        \log q(z_s) = \operatorname{logsumexp}_{n=1}^{N} \sum_j \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj})
            - \log N, \qquad
        \log q(z_{sj}) = \operatorname{logsumexp}_{n=1}^{N} \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj}) - \log N .

    With ``groups`` (lists of coordinates, e.g. the subspaces of an ISA prior), the marginals are those of each
    group of coordinates, :math:`\log q(z_{s,\mathcal{V}_k}) = \operatorname{logsumexp}_n \sum_{j \in \mathcal{V}_k}
    \log \mathcal{N}(z_{sj}; \mu_{nj}, \sigma_{nj}) - \log N`, instead of one per coordinate.

    An optional leading group dimension evaluates :math:`G` independent mixtures at once (``z`` ``(G, S, D)``
    against ``loc``/``scale`` ``(G, N, D)``); MIG uses it for the aggregate posterior of each factor value.

    **How it is computed.** Each coordinate term is :math:`\ell_{snj} = c_{nj} - t_{snj}^2` with
    :math:`t_{snj} = (z_{sj} - \mu_{nj}) / (\sqrt{2}\sigma_{nj})` and :math:`c_{nj} = -\log\sigma_{nj} -
    \tfrac12\log 2\pi`. For a set :math:`h` of coordinates (one coordinate, a group, or all of them for the joint)
    :math:`L_{snh} = \sum_{j \in h} \ell_{snj}` can never exceed :math:`m_h = \max_n \sum_{j \in h} c_{nj}`, so

    .. math::

        \operatorname{logsumexp}_n L_{snh} = m_h + \log \sum_n e^{L_{snh} - m_h},
        \qquad 0 < e^{L_{snh} - m_h} \le 1,

    with one fixed shift per mixture and coordinate set instead of a per-row maximum: each element costs a
    subtraction, a multiply, a multiply-add, one exp and one add, and the sums of component blocks add up in
    float64. Exponents are clamped at the smallest normal number's log (a subnormal exp is imprecise and very slow),
    which adds at most :math:`N e^{-86.8}` to a float32 sum; a row whose sum is below :math:`2^{30}` times that
    bound (a sample far in the tails of every component) is recomputed with a per-row maximum, so every result is as
    exact as a float32 log-sum-exp. On a CPU, large problems (at least :math:`2^{31}` elements) run a kernel fused
    by ``torch.compile`` (the first call compiles it, a few seconds), which streams each block once instead of
    materialising it; elsewhere, or if compiling fails, the same operations run eagerly in blocks of
    ``chunk_elements``, so peak memory stays bounded whatever :math:`N` is.

    :param z: samples ``(S, D)`` or ``(G, S, D)``.
    :param loc: posterior means ``(N, D)`` or ``(G, N, D)``; :param scale: posterior scales, same shape.
    :param joint: compute :math:`\log q(z_s)`; :param marginals: compute :math:`\log q(z_{sj})`.
    :param chunk_elements: elements per eager block (default: :math:`2^{19}` on a CPU, :math:`2^{26}` on a GPU).
    :param groups: coordinate groups for the marginals (default: each coordinate alone).
    :param compiled: force (``True``) or forbid (``False``) the compiled kernel; ``None`` chooses as described.
    :returns: ``(log_qz, log_qz_marginals)`` of shapes ``(..., S)`` and ``(..., S, D)`` (``(..., S, K)`` for ``K``
        groups; ``None`` where not asked).
    """
    squeeze = z.dim() == 2
    if squeeze:
        z, loc, scale = z.unsqueeze(0), loc.unsqueeze(0), scale.unsqueeze(0)
    if z.dim() != 3 or loc.dim() != 3 or loc.shape != scale.shape:
        raise ValueError(
            f"z must be (S, D) or (G, S, D) and loc, scale (N, D) or (G, N, D); got {tuple(z.shape)}, "
            f"{tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    if loc.shape[0] != z.shape[0] or loc.shape[2] != z.shape[2]:
        raise ValueError(f"z {tuple(z.shape)} and loc {tuple(loc.shape)} disagree in groups or dimensions")
    g_total, s_total, d = z.shape
    n_total = loc.shape[1]
    budget = _chunk_elements(z.device, chunk_elements)
    member = None if groups is None else _group_matrix(groups, d, z)
    loc, scale = loc.to(z.dtype), scale.to(z.dtype)
    lo = _log_tiny(z.dtype)

    # Components last and contiguous: the sums then reduce over the innermost axis.
    a = (math.sqrt(0.5) / scale).transpose(1, 2).contiguous()  # (G, D, N)
    b = loc.transpose(1, 2).contiguous()
    c = (-scale.log() - HALF_LOG_2PI).transpose(1, 2).contiguous()
    shift = c.amax(-1)  # (G, D): the largest coordinate term any sample can reach
    cc = c - shift[..., None]
    shift_joint = c.sum(1).amax(-1)  # (G,)
    kappa_joint = shift.sum(-1) - shift_joint  # >= 0: rebases the sum of shifted coordinate terms to shift_joint
    if member is None:
        shift_marg, kappa_groups = shift, None
    else:
        shift_marg = torch.einsum("gdn,kd->gkn", c, member).amax(-1)  # (G, K)
        kappa_groups = shift @ member.T - shift_marg
    h = d if member is None else len(member)
    acc_j = torch.zeros(g_total, s_total, dtype=torch.float64, device=z.device) if joint else None
    acc_m = torch.zeros(g_total, s_total, h, dtype=torch.float64, device=z.device) if marginals else None

    forced = compiled is True
    if compiled is None:
        compiled = z.device.type == "cpu" and g_total * s_total * n_total * d >= _COMPILE_MIN_ELEMENTS
    kernel = _compiled_block_sums() if compiled else None
    n_eff = n_total
    if kernel is not None:
        try:
            n_eff = _compiled_sums(kernel, z, a, b, cc, kappa_joint, member, kappa_groups, lo, acc_j, acc_m)
        except Exception as err:  # no C++ compiler, unsupported backend...: the eager path gives the same numbers
            if forced:
                raise RuntimeError(
                    f"compiling the aggregate-density kernel failed ({err}); pass compiled=False"
                ) from err
            _COMPILED["broken"] = repr(err)
            _log.warning("compiled aggregate-density kernel unavailable (%s); running eagerly", err)
            kernel = None
            n_eff = n_total
            if acc_j is not None:
                acc_j.zero_()
            if acc_m is not None:
                acc_m.zero_()
    if kernel is None:
        g_blk, s_blk, c_blk = _block_shape(budget, g_total, s_total, n_total, d)
        for g0 in range(0, g_total, g_blk):
            gs = slice(g0, g0 + g_blk)
            kg = None if kappa_groups is None else kappa_groups[gs]
            for c0 in range(0, n_total, c_blk):
                cs = slice(c0, c0 + c_blk)
                for s0 in range(0, s_total, s_blk):
                    ss = slice(s0, s0 + s_blk)
                    bj, bm = _block_sums(
                        z[gs, ss], a[gs, :, cs], b[gs, :, cs], cc[gs, :, cs], kappa_joint[gs], member, kg, lo,
                        joint, marginals, fused=False,
                    )  # fmt: skip
                    if joint:
                        acc_j[gs, ss] += bj
                    if marginals:
                        acc_m[gs, ss] += bm

    log_n = math.log(n_total)
    out_joint = (acc_j.log() + shift_joint.double()[:, None] - log_n).to(z.dtype) if joint else None
    out_marg = (acc_m.log() + shift_marg.double()[:, None, :] - log_n).to(z.dtype) if marginals else None
    # Clamped terms contribute at most n_eff * exp(lo); rows whose sum is not far above that are redone exactly.
    floor = n_eff * math.exp(lo) * 2.0**30
    bad = torch.zeros(g_total, s_total, dtype=torch.bool, device=z.device)
    if joint:
        bad |= acc_j < floor
    if marginals:
        bad |= (acc_m < floor).any(-1)
    if bad.any():
        for gi in bad.any(1).nonzero()[:, 0].tolist():
            rows = bad[gi].nonzero()[:, 0]
            ej, em = _exact_log_sums(
                z[gi, rows][None], loc[gi : gi + 1], scale[gi : gi + 1], joint, marginals, budget, member
            )
            if joint:
                out_joint[gi, rows] = ej[0] - log_n
            if marginals:
                out_marg[gi, rows] = em[0] - log_n
    if squeeze:
        out_joint = out_joint[0] if joint else None
        out_marg = out_marg[0] if marginals else None
    return out_joint, out_marg


def _compiled_sums(kernel, z, a, b, cc, kappa_joint, member, kappa_groups, lo, acc_j, acc_m) -> int:
    """Accumulate the shifted sums with the compiled kernel into ``acc_j``/``acc_m``; returns the padded :math:`N`.

    Samples and components are padded to whole blocks of fixed shape, so one compilation serves every call; a padded
    component has term ``_PAD_TERM`` (clamped, so it adds at most ``exp(lo)``) and padded samples are dropped.
    """
    g_total, s_total, d = z.shape
    n_total = a.shape[-1]
    sb, cb = _COMPILED_SAMPLES, _COMPILED_COMPONENTS
    n_pad, s_pad = -(-n_total // cb) * cb, -(-s_total // sb) * sb
    nb = n_pad // cb

    def blocks(t: torch.Tensor, value: float) -> torch.Tensor:  # (G, D, N) -> (G, blocks, D, cb), each contiguous
        t = torch.nn.functional.pad(t, (0, n_pad - n_total), value=value)
        return t.reshape(g_total, d, nb, cb).transpose(1, 2).contiguous()

    a_b, b_b, cc_b = blocks(a, 0.0), blocks(b, 0.0), blocks(cc, _PAD_TERM)
    z_p = torch.nn.functional.pad(z, (0, 0, 0, s_pad - s_total)).contiguous()
    joint, marginals = acc_j is not None, acc_m is not None
    for gi in range(g_total):
        kj = kappa_joint[gi : gi + 1]
        kg = None if kappa_groups is None else kappa_groups[gi : gi + 1].contiguous()
        for k in range(nb):
            ab, bb, cb_ = a_b[gi, k][None], b_b[gi, k][None], cc_b[gi, k][None]
            for s0 in range(0, s_pad, sb):
                bj, bm = kernel(z_p[gi, s0 : s0 + sb][None], ab, bb, cb_, kj, member, kg, lo, joint, marginals, True)
                s1 = min(s0 + sb, s_total)
                if joint:
                    acc_j[gi, s0:s1] += bj[0, : s1 - s0]
                if marginals:
                    acc_m[gi, s0:s1] += bm[0, : s1 - s0]
    return n_pad
