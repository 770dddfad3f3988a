r"""What Pyro's model/guide + ELBO adds to a training step, next to the same objective written in plain PyTorch.

For each model the script builds copies with the same weights and times one training step of each:

* **untwine**: exactly the step :func:`~untwine.inference.train.fit` takes: ``model.default_loss(N)``'s
  ``differentiable_loss(model.model, model.guide, x, y) / B``, ``backward()``, one step of the optimiser from
  :func:`~untwine.inference.train.make_optimizer`, the loss added to a running sum on the device, with Pyro's
  validation off;
* **Pyro's own**: the same step with Pyro's class of the same kind and settings in place of the default loss
  (``Trace_ELBO`` for :class:`~untwine.inference.elbo.SyncFreeTrace_ELBO`, ``TraceMeanField_ELBO`` for
  :class:`~untwine.inference.elbo.SyncFreeTraceMeanField_ELBO`,) so the table shows what the sync-free subclasses save;
  left out (``-``) where the default loss is Pyro's class unchanged or has no Pyro counterpart (the TC-decomposed
  objective);
* **PyTorch**: the same networks and the same Monte Carlo estimator written by hand (one reparameterised sample;
  β-TCVAE's minibatch-stratified estimate of :math:`\log q(z)`; ISA-VAE's Lp-nested ``log_prob``; N-VAE's
  closed-form Gaussian KLs and :math:`\log q(y \mid x)`; UG-VAE's cluster summed out exactly, as
  ``TraceEnum_ELBO`` does), then ``torch.optim.Adam(model.parameters(), fused=True)`` (``--baseline-adam``; fused
  is the fastest plain-PyTorch Adam on a CPU, ``default`` the per-tensor loop torch picks without flags).

Before timing, each variant is run once on the same parameters and the same noise (same seed): the script prints the
relative difference of the untwine and PyTorch losses and of their gradients, so the comparison is of one
objective, the same difference between untwine's objective and Pyro's own (zero up to rounding), and whether
validation was really off inside the Pyro step.

Settings: Chen et al.'s MLP at batch 2048 and Burgess et al.'s conv net at batch 64 on 64x64 dSprites (procedural
quick grid) for vae, beta-vae, beta-tcvae and isa-vae; MNIST (the shared data folder, or random binary images
when it is missing) at batch 128 with each model's MNIST network for n-vae (``mlp``), ug-vae and ml-vae
(``mlp-256``, one group of 128). A last block measures Pyro's fixed cost per step at a tiny batch.

    python benchmarks/svi_overhead.py                        # CPU, torch's threads
    python benchmarks/svi_overhead.py --threads 2 --steps 5 --repeats 7
    python benchmarks/svi_overhead.py --only mnist --steps 20
    python benchmarks/svi_overhead.py --device cuda --steps 50
    python benchmarks/svi_overhead.py --threads 1 --clock cpu     # a shared machine: CPU time, not elapsed time

Timing: after ``--warmup`` steps of each variant, ``--repeats`` rounds; in each round both variants take
``--steps`` consecutive steps (order reversed every other round, CUDA synchronised at the ends), and the round's
ms/step of each is recorded. Columns are medians over rounds; ``ratio`` is the median over rounds of untwine's
ms / PyTorch's ms in that round, ``own`` the same for Pyro's own ELBO. Not run by CI.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyro
import torch
from common import setup_device, shared_data
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch.nn import functional as F

from untwine.inference.elbo import SyncFreeTrace_ELBO, SyncFreeTraceMeanField_ELBO
from untwine.inference.train import make_optimizer
from untwine.pyro_models import build_model

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
DSPRITES_N = 737_280
MNIST_N = 60_000


@dataclass(frozen=True)
class Case:
    model: str
    network: str
    batch: int
    data: str  # "dsprites" or "mnist"
    target: float | None


CASES = (
    [Case(m, "chen-mlp", 2048, "dsprites", 1.05) for m in ("vae", "beta-vae", "beta-tcvae", "isa-vae")]
    + [Case(m, "burgess-conv", 64, "dsprites", 1.3) for m in ("vae", "beta-vae", "beta-tcvae", "isa-vae")]
    + [Case("n-vae", "mlp", 128, "mnist", None), Case("ug-vae", "mlp-256", 128, "mnist", None)]
    + [Case("ml-vae", "mlp-256", 128, "mnist", None)]
)


ADAM_FLAGS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def adam_kind(optimizer: torch.optim.Optimizer) -> str:
    """Which implementation an Adam runs: fused, foreach or the per-tensor loop."""
    flags = optimizer.defaults
    return "fused" if flags.get("fused") else "foreach" if flags.get("foreach") else "default"


# --- data ---------------------------------------------------------------------------------------------------------
def dsprites_batch(batch: int, generator: torch.Generator) -> torch.Tensor:
    from untwine.data import load_dataset

    data = load_dataset("dsprites", quick=True)
    idx = torch.randint(len(data), (batch,), generator=generator)
    return data.batch(idx, "cpu")[0]


def mnist_batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    raw = shared_data() / "mnist" / "MNIST" / "raw"
    images = raw / "train-images-idx3-ubyte.gz"
    if images.is_file():
        pixels = np.frombuffer(gzip.open(images).read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        labels = np.frombuffer(gzip.open(raw / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        idx = torch.randint(len(labels), (batch,), generator=generator).numpy()
        x = torch.from_numpy(pixels[idx].astype(np.float32) / 255.0)
        return x, torch.from_numpy(labels[idx].astype(np.int64))
    x = (torch.rand(batch, 1, 28, 28, generator=generator) < 0.15).float()
    return x, torch.randint(10, (batch,), generator=generator)


# --- the objectives written by hand -------------------------------------------------------------------------------
def log_lik(config, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of log p(x | z): Bernoulli on logits or Normal with fixed scale."""
    if config.likelihood == "bernoulli":
        return -F.binary_cross_entropy_with_logits(out, x, reduction="sum")
    s = config.obs_scale
    return -0.5 * ((x - out) / s).square().sum() - x.numel() * (math.log(s) + HALF_LOG_2PI)


def reparam(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # the same draw Normal(loc, scale).rsample() makes: empty().normal_()
    eps = torch.empty_like(loc).normal_()
    return loc + scale * eps, eps


def vae_loss(m, x, y) -> torch.Tensor:
    r""":math:`-[\log p(x|z) + \beta(\log p(z) - \log q(z|x))]` at one sample, N(0, I) prior."""
    loc, scale = m.encode(x)
    z, eps = reparam(loc, scale)
    kl = 0.5 * (z.square() - eps.square()).sum() - scale.log().sum()
    return -(log_lik(m.config, m.decoder(z), x) - m.config.kl_weight * kl)


def isa_loss(m, x, y) -> torch.Tensor:
    """As :func:`vae_loss` with the library's Lp-nested ``log_prob`` for log p(z)."""
    loc, scale = m.encode(x)
    z, eps = reparam(loc, scale)
    log_q = -0.5 * eps.square().sum() - scale.log().sum() - z.numel() * HALF_LOG_2PI
    return -(log_lik(m.config, m.decoder(z), x) + m.config.kl_weight * (m.prior().log_prob(z).sum() - log_q))


def tcvae_loss_fn(dataset_size: int) -> Callable:
    cache: dict = {}

    def loss(m, x, y) -> torch.Tensor:
        r"""Chen et al.'s decomposed objective with the minibatch-stratified estimate of log q(z)."""
        cfg = m.config
        loc, scale = m.encode(x)
        z, eps = reparam(loc, scale)
        b, n = z.shape[0], dataset_size
        key = (b, z.device, z.dtype)
        if key not in cache:
            w = torch.full((b, b), math.log(n - 1) - math.log(n) - math.log(b - 1), dtype=z.dtype, device=z.device)
            w.diagonal().fill_(-math.log(n))
            cache[key] = w
        log_w = cache[key]
        log_scale = scale.log()
        log_qz_x = -0.5 * eps.square().sum(-1) - log_scale.sum(-1)
        # (B, B, D): sample i scored against posterior m, as few passes as eager PyTorch allows; the constant
        # -D/2 log 2 pi cancels in every term below
        diff = (z.unsqueeze(1) - loc) * scale.reciprocal()
        pairwise = torch.addcmul(-log_scale, diff, diff, value=-0.5)
        log_qz = torch.logsumexp(pairwise.sum(-1) + log_w, 1)
        log_marg = torch.logsumexp(pairwise + log_w.unsqueeze(-1), 1).sum(-1)
        log_pz = -0.5 * z.square().sum(-1)
        tc = m.objective  # the pair's own KL weight is 1; the three weights are the objective's
        kl = (
            tc.mi_weight * (log_qz_x - log_qz) + tc.tc_weight * (log_qz - log_marg) + tc.dw_weight * (log_marg - log_pz)
        )
        return -(log_lik(cfg, m.decoder(z), x) - kl.sum())

    return loss


def normal_kl(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """KL(N(loc, scale^2) || N(0, 1)) summed."""
    return 0.5 * (scale.square() + loc.square() - 1).sum() - scale.log().sum()


def nvae_loss(m, x, y) -> torch.Tensor:
    """N-VAE's surrogate objective (eqs. 6-7), labelled batch: closed-form KLs as TraceMeanField_ELBO uses."""
    cfg = m.config
    d = m.latent_dim
    h = m.encoder(x)
    loc, scale = h[:, :d], F.softplus(h[:, d : 2 * d]) + 1e-6
    log_qy = torch.log_softmax(h[:, 2 * d :], -1).gather(-1, y.unsqueeze(-1)).sum()
    (loc_c, loc_s), (scale_c, scale_s) = m.split(loc), m.split(scale)
    z_c, _ = reparam(loc_c, scale_c)
    z_s, _ = reparam(loc_s, scale_s)
    out = m.decoder(m.decoder_input(z_c, z_s, y))
    kl = cfg.beta_c * normal_kl(loc_c, scale_c) + normal_kl(loc_s, scale_s)
    return -(log_lik(cfg, out, x) - kl + log_qy)


def ugvae_loss(m, x, y) -> torch.Tensor:
    r"""UG-VAE's ELBO (eqs. 10-11) at one sample of z and beta, the cluster d summed out exactly."""
    cfg = m.config
    groups = x.reshape(-1, cfg.group_size, *x.shape[1:])
    z_loc, z_scale = m.encode(groups)
    z, eps_z = reparam(z_loc, z_scale)
    if cfg.mixture:
        log_q_d = torch.log_softmax(m.cluster_net(z), -1)  # (G, B, K)
        probs = log_q_d.exp()
    else:
        probs = None
    b_loc, b_scale = m.combine(*m.local_factors(groups, probs))
    beta, eps_b = reparam(b_loc, b_scale)
    p_loc, p_scale = m.local_prior(beta)  # (G, 1, K, L)
    # log p(z | d, beta) per component; constants dropped on both sides of q(z|x) / p(z|d)
    log_pz = (-0.5 * ((z.unsqueeze(-2) - p_loc) / p_scale).square() - p_scale.log()).sum(-1)
    if cfg.mixture:
        local = (probs * (log_pz - math.log(cfg.num_clusters) - log_q_d)).sum()
    else:
        local = log_pz.sum()
    log_qz = -0.5 * eps_z.square().sum() - z_scale.log().sum()
    kl_beta = 0.5 * (beta.square() - eps_b.square()).sum() - b_scale.log().sum()
    out = m.decoder(m.decoder_input(z, beta))
    return -(log_lik(cfg, out, groups) + local - log_qz - kl_beta)


def hand_loss(case: Case, dataset_size: int) -> Callable:
    return {
        "vae": vae_loss,
        "beta-vae": vae_loss,
        "beta-tcvae": tcvae_loss_fn(dataset_size),
        "isa-vae": isa_loss,
        "n-vae": nvae_loss,
        "ug-vae": ugvae_loss,
        "ml-vae": ugvae_loss,
    }[case.model]


# --- steps ----------------------------------------------------------------------------------------------------------
#: untwine's ELBOs named after a Pyro ELBO, and that class (subclasses such as the TC objective are not listed: their
#: objective is not Pyro's)
PYRO_COUNTERPARTS = {
    SyncFreeTrace_ELBO: Trace_ELBO,
    SyncFreeTraceMeanField_ELBO: TraceMeanField_ELBO,
}


def pyro_counterpart(elbo: ELBO) -> ELBO | None:
    """Pyro's own ELBO with ``elbo``'s settings, or ``None`` where ``elbo`` is Pyro's class unchanged or has none."""
    own = PYRO_COUNTERPARTS.get(type(elbo))
    if own is None or type(elbo).differentiable_loss is own.differentiable_loss:
        return None
    extra = 1 if elbo.vectorize_particles and elbo.num_particles > 1 else 0  # __init__ adds the particle plate
    return own(
        num_particles=elbo.num_particles,
        max_plate_nesting=elbo.max_plate_nesting - extra,
        vectorize_particles=elbo.vectorize_particles,
        strict_enumeration_warning=elbo.strict_enumeration_warning,
    )


def pyro_step(model, x, y, dataset_size, lr, elbo: ELBO | None = None):
    """The step of ``fit``: default loss (or ``elbo``), ``make_optimizer``'s Adam, running loss sum on the device."""
    elbo = model.default_loss(dataset_size) if elbo is None else elbo
    optimizer = make_optimizer(model, lr)
    loss_sum = torch.zeros((), device=x.device)
    b = x.shape[0]

    def step():
        optimizer.zero_grad(set_to_none=True)
        value = elbo.differentiable_loss(model.model, model.guide, x, y) / b
        value.backward()
        optimizer.step()
        loss_sum.add_(value.detach() * b)

    return step, elbo, optimizer


def torch_step(model, loss_fn, x, y, lr, adam: str):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, **ADAM_FLAGS[adam])
    loss_sum = torch.zeros((), device=x.device)
    b = x.shape[0]

    def step():
        optimizer.zero_grad(set_to_none=True)
        value = loss_fn(model, x, y) / b
        value.backward()
        optimizer.step()
        loss_sum.add_(value.detach() * b)

    return step, optimizer


def loss_and_grad(loss_fn: Callable, model) -> tuple[float, torch.Tensor]:
    """The loss at seed 123 and the flattened gradient it leaves (zeroed again after)."""
    model.zero_grad(set_to_none=True)
    pyro.set_rng_seed(123)
    loss = loss_fn()
    loss.backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grad


def relative_differences(a: tuple[float, torch.Tensor], b: tuple[float, torch.Tensor]) -> tuple[float, float]:
    (va, ga), (vb, gb) = a, b
    grad_diff = float((ga - gb).norm() / gb.norm()) if ga.shape == gb.shape else float("nan")
    return abs(va - vb) / max(abs(vb), 1e-12), grad_diff


def agreement(pyro_model, torch_model, elbo, loss_fn, x, y, own_model=None, own=None):
    """Relative differences of loss and gradient (same parameters, same seed) of untwine's step against PyTorch's
    and against Pyro's own ELBO (nan without one), and whether validation was off."""
    ours = loss_and_grad(lambda: elbo.differentiable_loss(pyro_model.model, pyro_model.guide, x, y), pyro_model)
    value_diff, grad_diff = relative_differences(ours, loss_and_grad(lambda: loss_fn(torch_model, x, y), torch_model))
    own_diff = float("nan")
    if own is not None:
        theirs = loss_and_grad(lambda: own.differentiable_loss(own_model.model, own_model.guide, x, y), own_model)
        own_diff = max(relative_differences(ours, theirs))
    # the distributions a step builds: none may validate its arguments (fit turns validation off)
    with torch.no_grad():
        traces = [pyro.poutine.trace(f).get_trace(x, y) for f in (pyro_model.guide, pyro_model.model)]
    validating = pyro.infer.util.is_validation_enabled() or any(
        getattr(site["fn"], "_validate_args", False)
        for tr in traces
        for site in tr.nodes.values()
        if site["type"] == "sample"
    )
    return value_diff, grad_diff, own_diff, not validating


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_steps(steps: dict[str, Callable], n_steps: int, repeats: int, warmup: int, device: torch.device, clock):
    """Median ms/step of each variant, and of each variant's ratio to ``"torch"`` within a round."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for step in steps.values():
            step()
    sync()
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync()
            t0 = clock()
            for _ in range(n_steps):
                steps[name]()
            sync()
            times[name].append((clock() - t0) * 1e3 / n_steps)
    ms = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median([a / b for a, b in zip(v, times["torch"])]) for k, v in times.items()}
    return ms, ratio


def build_copies(case: Case, device: torch.device, n: int, **overrides):
    """``n`` copies of the case's model with the same weights."""
    shape = (1, 64, 64) if case.data == "dsprites" else (1, 28, 28)
    torch.manual_seed(0)
    model = build_model(case.model, image_shape=shape, network=case.network, **overrides).to(device).train()
    return [model] + [copy.deepcopy(model) for _ in range(n - 1)]


def run_case(case: Case, args, device: torch.device, generator: torch.Generator, batch: int | None = None, **over):
    batch = batch or case.batch
    if case.data == "dsprites":
        x, y, n = dsprites_batch(batch, generator), None, DSPRITES_N
    else:
        x, y = mnist_batch(batch, generator)
        n = MNIST_N
        y = y if case.model == "n-vae" else None
    x = x.to(device)
    y = y.to(device) if y is not None else None
    pyro.clear_param_store()
    pyro_model, torch_model, own_model = build_copies(case, device, 3, **over)
    loss_fn = hand_loss(case, n)
    lr = 1e-3
    p_step, elbo, optimizer = pyro_step(pyro_model, x, y, n, lr)
    steps = {"untwine": p_step}
    own = pyro_counterpart(elbo) if args.pyro_own else None
    if own is not None:
        steps["own"] = pyro_step(own_model, x, y, n, lr, elbo=own)[0]
    steps["torch"] = torch_step(torch_model, loss_fn, x, y, lr, args.baseline_adam)[0]
    value_diff, grad_diff, own_diff, off = agreement(pyro_model, torch_model, elbo, loss_fn, x, y, own_model, own)
    n_steps = args.steps_large if batch >= 1024 else args.steps
    ms, ratio = time_steps(steps, n_steps, args.repeats, args.warmup, device, CLOCKS[args.clock])
    return ms, ratio, value_diff, grad_diff, own_diff, off, type(elbo).__name__, adam_kind(optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=5, help="consecutive steps of each variant per round")
    parser.add_argument("--steps-large", type=int, default=2, help="the same for batches of 1024 and more")
    parser.add_argument(
        "--baseline-adam", choices=sorted(ADAM_FLAGS), default="fused", help="torch.optim.Adam of the PyTorch side"
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds (medians are over rounds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each variant first")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine; --threads 1, CPU only)",
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="run only cases whose model, network or data matches one of these"
    )
    parser.add_argument("--tiny", type=int, default=8, help="batch of the fixed-cost block (0: skip it)")
    parser.add_argument(
        "--no-pyro-own", dest="pyro_own", action="store_false", help="do not time Pyro's own ELBO beside untwine's"
    )
    args = parser.parse_args()

    device = setup_device(parser, args)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error("--clock cpu measures the host's CPU time, not the device's; use it with --device cpu")
    print(
        f"{args.repeats} rounds of {args.steps} steps ({args.steps_large} at batch >= 1024) per variant after "
        f"{args.warmup} warm-up steps; {args.clock} clock; PyTorch side: torch.optim.Adam({args.baseline_adam})\n"
    )

    generator = torch.Generator().manual_seed(0)
    cases = [c for c in CASES if args.only is None or {c.model, c.network, c.data} & set(args.only)]
    header = (
        f"{'model':<11} {'network':<13} {'batch':>5} {'untwine ms':>10} {'own ms':>8} {'PyTorch ms':>10} {'ratio':>6} "
        f"{'own':>6} {'target':>7} {'ok':>3}   {'ELBO':<27} {'Adam':<6} {'d(loss)':>8} {'d(grad)':>8} {'d(own)':>8} "
        f"{'valid.':>6}"
    )
    print(header)
    print("-" * len(header))
    t0 = time.perf_counter()

    def row(case, batch, result, target):
        ms, ratio, dv, dg, do, off, elbo, adam = result
        tgt = f"<={target:.2f}" if target else "-"
        ok = "-" if target is None else ("yes" if ratio["untwine"] <= target else "NO")
        own_ms, own_ratio = (f"{ms['own']:8.2f}", f"{ratio['own']:6.3f}") if "own" in ms else (f"{'-':>8}", f"{'-':>6}")
        own_diff = f"{'-':>8}" if math.isnan(do) else f"{do:8.1e}"
        print(
            f"{case.model:<11} {case.network:<13} {batch:5d} {ms['untwine']:10.2f} {own_ms} {ms['torch']:10.2f} "
            f"{ratio['untwine']:6.3f} {own_ratio} {tgt:>7} {ok:>3}   {elbo:<27} {adam:<6} {dv:8.1e} {dg:8.1e} "
            f"{own_diff} {'off' if off else 'ON':>6}",
            flush=True,
        )

    for case in cases:
        row(case, case.batch, run_case(case, args, device, generator), case.target)
    if args.tiny:
        print(f"\nfixed cost per step at batch {args.tiny} (little compute: untwine ms - PyTorch ms is the overhead)")
        tiny = [Case("vae", "mlp-256", args.tiny, "mnist", None), Case("n-vae", "mlp-256", args.tiny, "mnist", None)]
        tiny.append(Case("ug-vae", "mlp-256", args.tiny, "mnist", None))
        for case in tiny:
            over = {"group_size": args.tiny} if case.model == "ug-vae" else {}
            row(case, args.tiny, run_case(case, args, device, generator, **over), None)
    print(
        "\nratio: median over rounds of untwine ms / PyTorch ms; own: the same for Pyro's own ELBO class of that kind"
        "\n(- where untwine's objective is Pyro's class unchanged or has no Pyro counterpart); d(loss), d(grad):"
        "\nrelative difference of the untwine and PyTorch losses and gradient vectors on the same parameters and noise;"
        "\nd(own): the larger of the two between untwine's objective and Pyro's own; valid.: Pyro/torch validation"
        "\ninside the Pyro step; Adam: the implementation make_optimizer picked for the Pyro side."
    )
    print(f"total wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
