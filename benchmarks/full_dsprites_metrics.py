r"""Chen et al.'s sampling MIG and ELBO decomposition on the whole of dSprites, next to their reference algorithm.

The reference algorithm (Chen et al.'s ``estimate_entropies`` / ``mutual_info_metric_shapes`` and their
``elbo_decomposition``) scores batches of 10 samples at a time: it forms the full ``(N, D, 10)`` table of
:math:`\log \mathcal{N}(z; \mu_n, \sigma_n)` against all :math:`N` posteriors and reduces it with a
max/sub/exp/sum/log log-sum-exp over :math:`N`. It is written out below (:func:`reference_terms`), in float32 for its
timing (the precision Chen et al. use) and in float64 as the ground truth for agreement.

The table has three parts:

* **full dSprites** (737,280 images, Chen's MLP encoder of the ``vae`` model): seconds for encoding every image,
  for :func:`~untwine.metrics.sampling_mig` (10,000 codes per entropy, factors scale/orientation/posX/posY) and for
  :func:`~untwine.metrics.elbo_decomposition` (10,000 samples scored against all :math:`N` posteriors). The reference
  algorithm's seconds for the same work are measured on a sub-grid, side by side with untwine on the same codes, and
  extrapolated to the full grid by the exact number of (sample, component, dimension) terms each computes
  (:math:`O(S N D)`); the table says so.
* **agreement** on a sub-grid small enough for the float64 reference: untwine's MIG and decomposition against the
  float64 reference on the same codes (every code, no subsampling).
* **subsampling** on a larger sub-grid: the MIG from 10,000 codes against the MIG from every code (same codes), with
  the standard error the subsampled estimate reports.

Timing does not depend on training (the encoder is untrained unless ``--train-steps`` is given), agreement does: it
needs codes with structure, so by default (``--codes synthetic``) the sub-grid posteriors are a noisy function of
the factors (four informative coordinates, each mostly one factor with some of a second, and the other coordinates
wide noise); ``--codes model`` uses the encoder's own posteriors instead. Pass ``--cpu-lock PATH`` to run each
timed phase under an exclusive ``flock`` on ``PATH`` (each phase is a few minutes), so a shared machine's other jobs
do not distort the numbers.

    python benchmarks/full_dsprites_metrics.py --threads 2 --cpu-lock /tmp/untwine-cpu.lock
    python benchmarks/full_dsprites_metrics.py --no-full          # only the sub-grid parts
    python benchmarks/full_dsprites_metrics.py --device cuda

Not run by CI. Every number comes from one run of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from common import setup_device

from untwine.data import load_dataset
from untwine.data.dsprites import DSprites
from untwine.inference import TrainConfig, fit
from untwine.metrics import (
    DSPRITES_MIG_FACTORS,
    elbo_decomposition,
    encode_dataset,
    full_aggregate_log_density,
    sampling_mig,
)
from untwine.pyro_models import build_model

REF_BATCH = 10  # samples per reference batch, as in Chen et al.'s code
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# Sub-grids by factor classes (shape, scale, orientation, posX, posY); values not named are kept whole.
AGREE_GRID = {
    "shape": [2],
    "orientation": list(range(0, 40, 4)),
    "posX": list(range(0, 32, 3)),
    "posY": [*range(0, 32, 3)],
}
SUBSAMPLE_GRID = {"orientation": list(range(0, 40, 2)), "posX": list(range(0, 32, 2)), "posY": list(range(0, 32, 2))}


@contextlib.contextmanager
def cpu_lock(path: str | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the block (nothing without a path)."""
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


# --- the reference algorithm -----------------------------------------------------------------------


def reference_terms(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, joint: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chen et al.'s scoring: ``-log q(z_sj)`` ``(S, D)`` (and ``-log q(z_s)`` ``(S,)``) over all N posteriors.

    Batches of 10 samples; for each, the full ``(N, D, 10)`` table of Gaussian log-densities and a plain
    max/sub/exp/sum/log log-sum-exp over the N components.
    """
    z, loc, scale = z.to(dtype), loc.to(dtype), scale.to(dtype)
    n = loc.shape[0]
    log_sigma = scale.log()
    marg = torch.empty_like(z)
    joint_out = torch.empty(z.shape[0], dtype=dtype, device=z.device) if joint else None

    def lse(x: torch.Tensor) -> torch.Tensor:  # over dim 0
        m = x.max(0, keepdim=True).values
        return (x - m).exp().sum(0).log() + m[0]

    for k in range(0, z.shape[0], REF_BATCH):
        zb = z[k : k + REF_BATCH].T[None]  # (1, D, b)
        tmp = (zb - loc[:, :, None]) / scale[:, :, None]
        logq = -0.5 * (tmp * tmp + 2 * log_sigma[:, :, None] + 2 * HALF_LOG_2PI)  # (N, D, b)
        marg[k : k + REF_BATCH] = -(lse(logq) - math.log(n)).T
        if joint:
            joint_out[k : k + REF_BATCH] = -(lse(logq.sum(1)) - math.log(n))
    return marg, joint_out


def reference_mig(z, loc, scale, sizes: Sequence[int], chosen: Sequence[int], dtype: torch.dtype) -> float:
    """Chen et al.'s ``mutual_info_metric_shapes`` on every code (no subsampling), with their clamp at 0."""
    d = z.shape[1]
    h_marg = reference_terms(z, loc, scale, False, dtype)[0].double().mean(0)
    gaps = []
    for k in chosen:

        def by_value(t: torch.Tensor, k: int = k) -> torch.Tensor:
            return t.reshape(*sizes, d).movedim(k, 0).reshape(sizes[k], -1, d)

        zv, lv, sv = by_value(z), by_value(loc), by_value(scale)
        h_cond = sum(reference_terms(zv[v], lv[v], sv[v], False, dtype)[0].double().mean(0) for v in range(sizes[k]))
        mi = ((h_marg - h_cond / sizes[k]).clamp(min=0) / math.log(sizes[k])).sort(descending=True).values
        gaps.append((mi[0] - mi[1]).item())
    return float(np.mean(gaps))


def mig_terms(n: int, sizes: Sequence[int], chosen: Sequence[int], s: int, d: int) -> int:
    """(sample, component, dimension) terms of the sampling MIG: marginal plus one mixture per factor value."""
    total = min(s, n) * n * d
    for k in chosen:
        m = n // sizes[k]
        total += sizes[k] * min(s, m) * m * d
    return total


# --- the benchmark --------------------------------------------------------------------------------------


def make_model(args, device: torch.device):
    torch.manual_seed(args.seed)
    model = build_model("vae", image_shape=(1, 64, 64), latent_dim=args.latent_dim).to(device)
    if args.train_steps > 0:
        train = load_dataset("dsprites", subset=args.train_images, seed=args.seed)
        config = TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed, device=str(device))
        fit(model, train, config, progress=False, max_steps=args.train_steps)
    return model.eval()


def synthetic_codes(data, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors that are a noisy function of the four scored factors (coordinates 0-3) plus wide noise."""
    g = torch.Generator().manual_seed(seed)
    idx = chosen_factors(data)
    sizes = torch.tensor([data.factor_sizes[k] for k in idx], dtype=torch.float32)
    values = data.targets[:, idx].float() / (sizes - 1).clamp(min=1)
    mix = torch.eye(len(idx)) + 0.3 * torch.roll(torch.eye(len(idx)), 1, 1)
    loc = 0.3 * torch.randn(len(data), d, generator=g)
    loc[:, : len(idx)] = 2 * values @ mix.T + 0.05 * torch.randn(len(data), len(idx), generator=g)
    scale = torch.full((len(data), d), 0.9)
    scale[:, : len(idx)] = 0.08
    return loc, scale


def posteriors(model, data, args, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if args.codes == "model":
        return encode_dataset(model, data, device=device)
    return tuple(t.to(device) for t in synthetic_codes(data, args.latent_dim, args.seed))


def chosen_factors(data) -> list[int]:
    names = list(data.factor_names)
    return [names.index(f) for f in DSPRITES_MIG_FACTORS if data.factor_sizes[names.index(f)] > 1]


def decomposition_terms(dec: dict) -> np.ndarray:
    return np.array([dec[k] for k in ("mi", "tc", "dwkl")])


def reference_decomposition(dec: dict, loc, scale, dtype) -> np.ndarray:
    """MI, TC and dimension-wise KL from the reference scoring of the same samples (log q(z|x), log p(z) reused)."""
    s = dec["samples"]
    z = torch.from_numpy(s["z"]).to(loc.device)
    marg, joint = reference_terms(z, loc, scale, True, dtype)
    log_qz, log_qz_marg = -joint.double().cpu().numpy(), -marg.double().cpu().numpy()
    mi = s["log_qz_x"] - log_qz
    tc = log_qz - log_qz_marg.sum(-1)
    dw = log_qz_marg.sum(-1) - s["log_pz"]
    return np.array([mi.mean(), tc.mean(), dw.mean()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=10000, help="codes per entropy / decomposition samples")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--train-steps", type=int, default=0, help="SVI steps before measuring (0: untrained)")
    parser.add_argument("--codes", choices=("synthetic", "model"), default="synthetic", help="codes for agreement")
    parser.add_argument("--train-images", type=int, default=50000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--full", action=argparse.BooleanOptionalAction, default=True, help="time the full grid")
    parser.add_argument("--subsample", action=argparse.BooleanOptionalAction, default=True,
                        help="compare 10,000 codes with every code on a larger sub-grid")  # fmt: skip
    parser.add_argument("--cpu-lock", default=None, help="flock this file around each timed phase")
    args = parser.parse_args()
    device = setup_device(parser, args)
    s = args.num_samples
    lock = args.cpu_lock

    model = make_model(args, device)
    rows: list[tuple[str, str, str, str]] = []
    names = list(DSprites(subgrid=AGREE_GRID).factor_names)

    # 1. agreement with the float64 reference and the side-by-side timing on the same sub-grid
    with cpu_lock(lock):
        sub = DSprites(subgrid=AGREE_GRID)
        n_sub, sizes_sub, chosen_sub = len(sub), sub.factor_sizes, chosen_factors(sub)
        loc, scale = posteriors(model, sub, args, device)
        ours, t_ours_mig = timed(
            lambda: sampling_mig(loc, scale, sizes_sub, chosen_sub, names, n_sub, args.seed, return_samples=True),
            device,
        )
        z = torch.from_numpy(ours["samples"]["z"]).to(device)
        ref32, t_ref_mig = timed(lambda: reference_mig(z, loc, scale, sizes_sub, chosen_sub, torch.float32), device)
        ref64 = reference_mig(z, loc, scale, sizes_sub, chosen_sub, torch.float64)
        dec = elbo_decomposition(model, sub, seed=args.seed, codes=(loc, scale), return_samples=True)
        zd = torch.from_numpy(dec["samples"]["z"]).to(device)
        _, t_ours_dec = timed(lambda: full_aggregate_log_density(zd, loc, scale), device)
        _, t_ref_dec = timed(lambda: reference_terms(zd, loc, scale, True, torch.float32), device)
        dec64 = reference_decomposition(dec, loc, scale, torch.float64)
    mig_sub_terms = mig_terms(n_sub, sizes_sub, chosen_sub, n_sub, loc.shape[1])
    dec_sub_terms = n_sub * n_sub * loc.shape[1]
    grid_txt = f"sub-grid {n_sub} images"
    rows.append(("MIG, untwine vs float64 reference", grid_txt, f"{ours['mig']:.6f} vs {ref64:.6f}",
                 f"|diff| {abs(ours['mig'] - ref64):.1e} (float32 reference: {abs(ref32 - ref64):.1e})"))  # fmt: skip
    diff = np.abs(decomposition_terms(dec) - dec64).max()
    rows.append(("MI / TC / DW-KL vs float64 reference", grid_txt,
                 "/".join(f"{v:.4f}" for v in decomposition_terms(dec)), f"max |diff| {diff:.1e} nats"))  # fmt: skip
    rows.append(("MIG seconds (same codes)", grid_txt, f"untwine {t_ours_mig:.2f}, reference {t_ref_mig:.2f}",
                 f"ratio {t_ref_mig / t_ours_mig:.1f}x"))  # fmt: skip
    rows.append(("decomposition scoring seconds", grid_txt, f"untwine {t_ours_dec:.2f}, reference {t_ref_dec:.2f}",
                 f"ratio {t_ref_dec / t_ours_dec:.1f}x (log q(z) and log q(z_j) of every sample)"))  # fmt: skip

    # 2. subsampled (10,000 codes) against every code, same codes
    if args.subsample:
        with cpu_lock(lock):
            big = DSprites(subgrid=SUBSAMPLE_GRID)
            lb, sb = posteriors(model, big, args, device)
            chosen_big = chosen_factors(big)
            part, t_part = timed(
                lambda: sampling_mig(lb, sb, big.factor_sizes, chosen_big, names, s, args.seed), device
            )
            every, t_every = timed(
                lambda: sampling_mig(lb, sb, big.factor_sizes, chosen_big, names, len(big), args.seed), device
            )
        se = part["stderr"]["mig"]
        sub_txt = f"sub-grid {len(big)} images"
        rows.append((f"MIG, {s} codes vs every code", sub_txt, f"{part['mig']:.4f} vs {every['mig']:.4f}",
                     f"|diff| {abs(part['mig'] - every['mig']):.4f}, reported SE {se:.4f}"))  # fmt: skip
        rows.append(("  seconds", sub_txt, f"{t_part:.1f} vs {t_every:.1f}", ""))

    # 3. the full grid
    if args.full:
        full = load_dataset("dsprites")
        n, d = len(full), args.latent_dim
        chosen = chosen_factors(full)
        with cpu_lock(lock):
            (loc_f, scale_f), t_enc = timed(lambda: encode_dataset(model, full, device=device), device)
            res, t_mig = timed(
                lambda: sampling_mig(loc_f, scale_f, full.factor_sizes, chosen, names, s, args.seed), device
            )
        with cpu_lock(lock):
            dec_f, t_dec = timed(
                lambda: elbo_decomposition(model, full, num_samples=s, seed=args.seed, codes=(loc_f, scale_f)), device
            )
        ref_mig = t_ref_mig * mig_terms(n, full.factor_sizes, chosen, s, d) / mig_sub_terms
        ref_dec = t_ref_dec * (s * n * d) / dec_sub_terms
        full_txt = f"full {n} images"
        rows.append(("encoding seconds", full_txt, f"{t_enc:.1f}", ""))
        rows.append(("MIG seconds (S=%d)" % s, full_txt,
                     f"untwine {t_mig:.1f}, reference {ref_mig:.0f} (extrapolated*)",
                     f"ratio {ref_mig / t_mig:.1f}x; MIG {res['mig']:.4f} +- {res['stderr']['mig']:.4f}"))  # fmt: skip
        rows.append(("decomposition seconds (S=%d)" % s, full_txt,
                     f"untwine {t_dec:.1f}, reference {ref_dec:.0f} (extrapolated*)",
                     f"ratio {ref_dec / t_dec:.1f}x; MI {dec_f['mi']:.3f} TC {dec_f['tc']:.3f} "
                     f"DW {dec_f['dwkl']:.3f}"))  # fmt: skip

    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print(
        f"device {device}, {torch.get_num_threads()} threads, encoder trained {args.train_steps} steps, "
        f"{args.codes} codes on sub-grids, seed {args.seed}"
    )
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if args.full:
        print("* reference seconds measured on the agreement sub-grid, side by side with untwine, and scaled by the")
        print("  exact count of (sample, component, dimension) terms it evaluates on the full grid (O(S N D)).")


if __name__ == "__main__":
    main()
