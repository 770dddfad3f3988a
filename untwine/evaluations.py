"""What a run folder computes and draws, by name: the registries behind ``metrics.json`` and ``figures/``.

A model lists names from :data:`EVALUATIONS` in ``Model.evaluations()`` and from :data:`FIGURES` in
``Model.figures()`` (see :mod:`untwine.pyro_models.base`); :func:`untwine.experiment.evaluate` and
:func:`untwine.experiment.plot` run them in that order. An evaluation returns the entries it adds to ``metrics.json``
(nothing when the data do not allow it, e.g. MIG without ground-truth factors); a figure function returns
``(file name, matplotlib Figure)`` pairs. :func:`evaluation` and :func:`figure` register new ones, so a model written
outside the package can add its paper's numbers and pictures without editing untwine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

from untwine.data import DomainMixture, FactorDataset, ImageDataset, LabelledFactors
from untwine.data.groups import GroupedDataset
from untwine.diagnostics import ImportanceResult, importance_log_likelihood
from untwine.metrics import (
    DSPRITES_MIG_FACTORS,
    batch_classification,
    batch_embedding,
    beta_vae_score,
    classification_accuracy,
    dci,
    discrete_mig_of,
    domain_alignment,
    domain_transfer,
    elbo_decomposition,
    encode_dataset,
    evaluate_elbo,
    factor_vae_score,
    gaussian_total_correlation,
    global_means,
    global_posterior_summary,
    ink_transfer,
    labelled_sampling_mig,
    latent_kl,
    modularity_explicitness,
    sampling_mig,
    sap,
)
from untwine.plots import (
    plot_class_kl_matrix,
    plot_class_samples,
    plot_class_traversals,
    plot_global_tsne,
    plot_history,
    plot_interpolation,
    plot_khat,
    plot_latent_kl,
    plot_latent_vs_factors,
    plot_reconstructions,
    plot_samples,
    plot_sampling_grid,
    plot_traversals,
)
from untwine.pyro_models.base import Subspaces

if TYPE_CHECKING:
    from untwine.experiment import Run

EVAL_SIZE, QUICK_EVAL_SIZE = 10_000, 2_048
# images (at least this many groups for a grouped model) and guide draws of the importance-sampled log p(x)
LOG_PX_IMAGES, QUICK_LOG_PX_IMAGES = 2_000, 128
LOG_PX_GROUPS, QUICK_LOG_PX_GROUPS = 16, 2
LOG_PX_SAMPLES = 100
# training and evaluation (or test) points of the disentanglement_lib scores (its defaults; quick runs score fewer,
# which costs precision: DCI's gradient-boosted trees take minutes at the full size)
SCORE_POINTS, QUICK_SCORE_POINTS = (10_000, 5_000), (1_000, 500)
# batches of each kind for UG-VAE's batch experiments, for SVM training and as many again for testing
GLOBAL_BATCHES, QUICK_GLOBAL_BATCHES = 100, 30


@dataclass
class Context:
    """What an evaluation or figure reads: the run, its training data and held-out split, shared lazily computed
    pieces (the encoder's codes of every training image), and the sizes quick mode shrinks."""

    run: Run
    data: ImageDataset
    held_out: ImageDataset
    codes: tuple[torch.Tensor, torch.Tensor] | None = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def model(self) -> Any:
        return self.run.model

    @property
    def seed(self) -> int:
        return self.run.settings["data"]["seed"]

    @property
    def quick(self) -> bool:
        return self.run.settings["data"]["quick"]

    @property
    def eval_size(self) -> int:
        return QUICK_EVAL_SIZE if self.quick else EVAL_SIZE

    @property
    def global_batches(self) -> int:
        return QUICK_GLOBAL_BATCHES if self.quick else GLOBAL_BATCHES

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def factor_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(loc, scale)`` of every training image (one encoder pass, shared by metrics and figures)."""
        if self.codes is None:
            self.codes = encode_dataset(self.model, self.data)
        return self.codes

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per context (for pieces several evaluations or figures share)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def importance(self) -> ImportanceResult:
        """:func:`~untwine.diagnostics.importance_log_likelihood` with :data:`LOG_PX_SAMPLES` draws on the held-out
        split (its first images, or groups in the evaluation order), computed once for ``log_px`` and ``khat.png``."""

        def compute() -> ImportanceResult:
            images, groups = (
                (QUICK_LOG_PX_IMAGES, QUICK_LOG_PX_GROUPS) if self.quick else (LOG_PX_IMAGES, LOG_PX_GROUPS)
            )
            group = getattr(self.model, "group_size", 1)
            n = max(images, groups * group) if group > 1 else images
            held_out = self.held_out.random_subset(min(n, len(self.held_out)), seed=self.seed) if group == 1 else None
            data = held_out if held_out is not None else self.held_out
            return importance_log_likelihood(self.model, data, LOG_PX_SAMPLES, max_images=n, seed=self.seed)

        return self.once("importance", compute)

    def mig_factors(self) -> list[str] | None:
        """The factors MIG scores: on dSprites shape is excluded (as in the β-TCVAE and ISA-VAE papers), and so is a
        factor a sub-grid holds fixed (it carries no information); elsewhere every factor."""
        if self.data.name != "dsprites":
            return None
        d = self.data
        return [f for f in DSPRITES_MIG_FACTORS if d.factor_sizes[d.factor_names.index(f)] > 1] or None


Evaluation = Callable[[Context], dict[str, Any]]
FigureMaker = Callable[[Context], list[tuple[str, Figure]]]
#: evaluations by name; each returns entries of ``metrics.json``
EVALUATIONS: dict[str, Evaluation] = {}
#: figures by name; each returns ``(file name, Figure)`` pairs for ``figures/``
FIGURES: dict[str, FigureMaker] = {}


def evaluation(name: str) -> Callable[[Evaluation], Evaluation]:
    """Register ``func(context) -> dict`` as the evaluation ``name`` (a decorator)."""

    def register(func: Evaluation) -> Evaluation:
        EVALUATIONS[name] = func
        return func

    return register


def figure(name: str) -> Callable[[FigureMaker], FigureMaker]:
    """Register ``func(context) -> [(file name, Figure), ...]`` as the figure ``name`` (a decorator)."""

    def register(func: FigureMaker) -> FigureMaker:
        FIGURES[name] = func
        return func

    return register


def jsonable(value: Any) -> Any:
    """Numpy arrays and scalars, tensors and nested containers as plain JSON types."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- evaluations ----------------------------------------------------------------------------------------------------
@evaluation("elbo")
def _elbo(ctx: Context) -> dict[str, Any]:
    """``train`` / ``test``: ELBO, E[log p(x|z)] and KL per image on a seeded subset of the training data and, where
    the dataset has one, its test split; ``eval_images``: the subset's size."""
    size, seed = ctx.eval_size, ctx.seed
    out: dict[str, Any] = {"train": evaluate_elbo(ctx.model, ctx.data.random_subset(size, seed=seed))}
    if ctx.held_out is not ctx.data:
        out["test"] = evaluate_elbo(ctx.model, ctx.held_out.random_subset(size, seed=seed))
    out["eval_images"] = min(size, len(ctx.data))
    return out


@evaluation("log_px")
def _log_px(ctx: Context) -> dict[str, Any]:
    """``log_px``: the importance-weighted bound on log p(x) per image with the guide as proposal (K = 100), its
    standard error and Pareto-smoothed estimate; ``khat``: the Pareto k-hat of the weights (median, 90th percentile,
    shares above 0.5 and 0.7: where the estimate and the guide are not to be trusted). On the held-out split."""
    out = ctx.importance().summary()
    out["log_px"]["split"] = "test" if ctx.held_out is not ctx.data else "train"
    # JSON has no infinities: a quantile of units without a fitted tail (or with flat weights) is written as text
    out["khat"] = {k: v if not isinstance(v, float) or math.isfinite(v) else str(v) for k, v in out["khat"].items()}
    return out


@evaluation("mig")
def _mig(ctx: Context) -> dict[str, Any]:
    """``mig``: Chen et al.'s sampling MIG on data with ground-truth factors (shape excluded on dSprites); on labelled
    images without a full grid (a random subset, CelebA) the labelled estimator, marked ``"estimator": "labelled"``."""
    if not isinstance(ctx.data, LabelledFactors):
        return {}
    loc, scale = ctx.factor_codes()
    d = ctx.data
    if isinstance(d, FactorDataset):
        result = sampling_mig(loc, scale, d.factor_sizes, ctx.mig_factors(), factor_names=d.factor_names,
                              seed=ctx.seed)  # fmt: skip
        return {"mig": jsonable({**result, "estimator": "grid"})}
    varying = [name for name, size in zip(d.factor_names, d.values_present()) if size > 1]
    scored = [f for f in ctx.mig_factors() or varying if f in varying]
    if not scored:
        return {}
    result = labelled_sampling_mig(loc, scale, d.targets, factor_names=d.factor_names, scored=scored, seed=ctx.seed)
    return {"mig": jsonable({**result, "estimator": "labelled"})}


@evaluation("mig_grouped")
def _mig_grouped(ctx: Context) -> dict[str, Any]:
    """``mig_grouped``: the sampling MIG with each independent subspace scored as one variable (ISA-VAE)."""
    if not isinstance(ctx.data, FactorDataset) or not isinstance(ctx.model, Subspaces):
        return {}
    loc, scale = ctx.factor_codes()
    d = ctx.data
    result = sampling_mig(loc, scale, d.factor_sizes, ctx.mig_factors(), factor_names=d.factor_names, seed=ctx.seed,
                          groups=ctx.model.subspaces())  # fmt: skip
    return {"mig_grouped": jsonable(result)}


@evaluation("discrete_mig")
def _discrete_mig(ctx: Context) -> dict[str, Any]:
    """``discrete_mig``: disentanglement_lib's binned MIG on 10,000 encoder means (a full grid or labelled images)."""
    if not isinstance(ctx.data, LabelledFactors):
        return {}
    return {"discrete_mig": jsonable(discrete_mig_of(ctx.model, ctx.data, seed=ctx.seed))}


def _scored_factors(ctx: Context) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """Encoder means of the training images, their factor classes and names, for the disentanglement_lib scores:
    every factor that takes more than one value in these images (on dSprites shape included, the constant colour
    left out, as disentanglement_lib does), on a full grid or on labelled images without one; ``None`` without
    factors."""
    if not isinstance(ctx.data, LabelledFactors):
        return None
    d = ctx.data
    keep = [k for k, size in enumerate(d.values_present()) if size > 1]
    if not keep:
        return None
    loc, _ = ctx.factor_codes()
    return loc.cpu().numpy(), d.targets[:, keep].cpu().numpy(), [d.factor_names[k] for k in keep]


def _score(name: str, func: Callable[..., dict[str, Any]], held_out: str) -> Evaluation:
    """An evaluation that runs ``func(codes, factors, seed=..., num_train=..., <held_out>=...)`` on the encoder means
    of the training images with :data:`SCORE_POINTS` (quick: :data:`QUICK_SCORE_POINTS`). A score that splits the
    images into disjoint training and test rows gets at most all of them, two thirds for training."""

    def run(ctx: Context) -> dict[str, Any]:
        scored = _scored_factors(ctx)
        if scored is None:
            return {}
        codes, factors, names = scored
        train, test = QUICK_SCORE_POINTS if ctx.quick else SCORE_POINTS
        if held_out == "num_test" and train + test > len(codes):
            train = 2 * len(codes) // 3
            test = len(codes) - train
        points = {"num_train": train, held_out: test}
        result = func(codes, factors, seed=ctx.seed, factor_names=names, **points)
        return {name: jsonable({**result, "factors": names, **points})}

    run.__doc__ = f"``{name}``: :func:`~untwine.metrics.{func.__name__}` on the encoder means of the training images."
    return evaluation(name)(run)


_score("beta_vae_score", beta_vae_score, "num_eval")
_score("factor_vae_score", factor_vae_score, "num_eval")
_score("dci", dci, "num_test")
_score("sap", sap, "num_test")
_score("modularity", modularity_explicitness, "num_test")


@evaluation("gaussian_tc")
def _gaussian_tc(ctx: Context) -> dict[str, Any]:
    """``gaussian_tc``: total correlation of a Gaussian fitted to the encoder means of the training images, the
    unsupervised score (no factors needed): every image of factor data, else a seeded subset of the evaluation size."""
    if isinstance(ctx.data, LabelledFactors):
        loc, _ = ctx.factor_codes()
    else:
        loc, _ = encode_dataset(ctx.model, ctx.data.random_subset(ctx.eval_size, seed=ctx.seed))
    return {"gaussian_tc": float(gaussian_total_correlation(loc.cpu().numpy()))}


@evaluation("decomposition")
def _decomposition(ctx: Context) -> dict[str, Any]:
    """``decomposition``: β-TCVAE's index-code MI, total correlation and dimension-wise KL against all N posteriors,
    from a seeded subsample with standard errors."""
    if not isinstance(ctx.data, FactorDataset):
        return {}
    n = min(ctx.eval_size, len(ctx.data))
    result = elbo_decomposition(ctx.model, ctx.data, num_samples=n, seed=ctx.seed, codes=ctx.factor_codes())
    return {"decomposition": jsonable(result)}


@evaluation("classification")
def _classification(ctx: Context) -> dict[str, Any]:
    """``classification``: accuracy of q(y|x) on the test split (else the training data)."""
    result = classification_accuracy(ctx.model, ctx.held_out)
    result["split"] = "test" if ctx.held_out is not ctx.data else "train"
    return {"classification": result}


def _latent_kl(ctx: Context) -> dict[str, Any]:
    return ctx.once("latent_kl", lambda: latent_kl(ctx.model, ctx.held_out))


@evaluation("latent_kl")
def _latent_kl_metric(ctx: Context) -> dict[str, Any]:
    """``latent_kl``: N-VAE's KL per dimension, per class block and true class, z_c and z_s totals."""
    return {"latent_kl": jsonable(_latent_kl(ctx))}


@evaluation("global_posterior")
def _global_posterior(ctx: Context) -> dict[str, Any]:
    """``global_posterior``: over random batches of held-out images (the paper's training batches), the KL per group,
    :math:`I(X; \\beta)`, the range of the posterior mean, and what drawing :math:`\\beta` from the prior or swapping
    it between batches costs the likelihood; ``global_posterior_grouped``: the same over held-out batches grouped as
    the run's training groups were (``--group-by``), when they were not random."""
    n, seed, model = ctx.global_batches, ctx.seed, ctx.model
    out: dict[str, Any] = {"global_posterior": global_posterior_summary(model, ctx.held_out, n, seed=seed)}
    by = ctx.run.settings["data"].get("group_by", "random")
    if by != "random":
        index = GroupedDataset(ctx.held_out, by, model.group_size).batches(n, seed)
        summary = global_posterior_summary(model, ctx.held_out, seed=seed, index=index)
        out["global_posterior_grouped"] = {"group_by": by, **summary}
    return jsonable(out)


@evaluation("ink_transfer")
def _ink_transfer(ctx: Context) -> dict[str, Any]:
    """``ink_transfer``: the share of the real ink gap between thin and thick held-out batches that swapping
    :math:`\\beta` moves (on a domain mixture, within its first domain)."""
    data = ctx.held_out.domain(0) if isinstance(ctx.held_out, DomainMixture) else ctx.held_out
    result = ink_transfer(ctx.model, data, num_batches=max(ctx.global_batches // 5, 2), seed=ctx.seed)
    return {"ink_transfer": {"images": data.name, **result}}


@evaluation("batch_classification")
def _batch_classification(ctx: Context) -> dict[str, Any]:
    """``batch_classification`` on MNIST: UG-VAE's Table 1 (digit series told apart from global posterior means),
    with the same SVMs on label-free features of the same batches and the margin over the best of them."""
    if ctx.run.settings["data"]["name"] != "mnist":
        return {}
    table = batch_classification(ctx.model, ctx.held_out, num_batches=ctx.global_batches, seed=ctx.seed)
    return {"batch_classification": table}


@evaluation("domains")
def _domains(ctx: Context) -> dict[str, Any]:
    """On a two-domain mixture: ``domain_separability`` (SVM accuracy, pure batches of one domain against the other)
    and ``domain_transfer`` (which latent carries the domain)."""
    if not isinstance(ctx.held_out, DomainMixture):
        return {}
    n, seed = ctx.global_batches, ctx.seed
    result = domain_alignment(ctx.model, ctx.held_out, num_batches=n, seed=seed, embed=False)
    transfer = domain_transfer(ctx.model, ctx.held_out, num_batches=n // 5, seed=seed)
    return {"domain_separability": result["separability"], "domain_transfer": transfer}


# --- figures --------------------------------------------------------------------------------------------------------
def _probe_images(ctx: Context) -> torch.Tensor:
    """32 seeded training images, the ones every figure of a run shows."""

    def draw() -> torch.Tensor:
        g = torch.Generator().manual_seed(ctx.seed)
        return ctx.data.batch(torch.randperm(len(ctx.data), generator=g)[:32], ctx.device)[0]

    return ctx.once("probe", draw)


@figure("reconstructions")
def _reconstructions(ctx: Context) -> list[tuple[str, Figure]]:
    return [("reconstructions.png", plot_reconstructions(ctx.model, _probe_images(ctx)))]


@figure("samples")
def _samples(ctx: Context) -> list[tuple[str, Figure]]:
    return [("samples.png", plot_samples(ctx.model, 64))]


@figure("traversals")
def _traversals(ctx: Context) -> list[tuple[str, Figure]]:
    """Per-coordinate traversals, grouped by subspace for a model with :class:`Subspaces`."""
    groups = ctx.model.subspaces() if isinstance(ctx.model, Subspaces) else None
    return [("traversals.png", plot_traversals(ctx.model, _probe_images(ctx)[0], groups=groups))]


@figure("loss")
def _loss(ctx: Context) -> list[tuple[str, Figure]]:
    return [("loss.png", plot_history(ctx.run.history))] if ctx.run.history else []


@figure("khat")
def _khat(ctx: Context) -> list[tuple[str, Figure]]:
    """The distribution of Pareto k-hat over held-out images (groups for a model with a global latent)."""
    result = ctx.importance()
    unit = "group" if result.group_size > 1 else "image"
    title = f"{ctx.run.settings['model']}: log p(x) ≥ {result.summary()['log_px']['iwae']:.1f} nats/image, K = "
    return [("khat.png", plot_khat(result.khat, title + str(result.num_samples), unit, result.num_samples))]


@figure("latent_vs_factors")
def _latent_vs_factors(ctx: Context) -> list[tuple[str, Figure]]:
    if not isinstance(ctx.data, FactorDataset):
        return []
    d = ctx.data
    if d.name == "dsprites":  # the β-TCVAE paper's figure: the four continuous factors, a line per shape
        factors, split = [f for f in DSPRITES_MIG_FACTORS if f in d.factor_names], "shape"
    else:
        factors, split = [f for f, size in zip(d.factor_names, d.factor_sizes) if size > 1], None
    if not factors:
        return []
    figure = plot_latent_vs_factors(ctx.factor_codes()[0], d, factors, split_by=split)
    return [("latent_vs_factors.png", figure)]


@figure("class_figures")
def _class_figures(ctx: Context) -> list[tuple[str, Figure]]:
    """N-VAE: KL per dimension (fig. 5) and per class block (fig. 10), class-dependent and shared traversals
    (figs. 1, 2, 6-8) and samples per class at sigma 1 and 1.4 (fig. 11)."""
    model, kl = ctx.model, _latent_kl(ctx)
    classes = list(range(min(model.config.num_classes, 10)))
    return [
        ("latent_kl.png", plot_latent_kl(kl, model)),
        ("class_kl_matrix.png", plot_class_kl_matrix(kl)),
        ("class_traversals.png", plot_class_traversals(model, classes)),
        ("shared_traversals.png", plot_class_traversals(model, classes[:5], shared=True)),
        ("samples_sigma1.png", plot_class_samples(model, 1.0)),
        ("samples_sigma1.4.png", plot_class_samples(model, 1.4)),
    ]


@figure("global_figures")
def _global_figures(ctx: Context) -> list[tuple[str, Figure]]:
    """UG-VAE: the sampling grid for the three most used clusters (fig. 3) with :math:`\\beta` over the range the
    posterior means of random held-out batches take (``sampling_grid.png``) and over the prior's, as the paper draws it
    (``sampling_grid_prior.png``), an interpolation between the posteriors of two held-out batches with each row's
    distance from the endpoints' posteriors (fig. 5) and the t-SNE of global posterior means (fig. 5(b) for a domain
    mixture: pure and mixed batches; fig. 7 for MNIST: even, odd and random batches)."""
    model, held_out, seed, device = ctx.model, ctx.held_out, ctx.seed, ctx.device
    sample = held_out.random_subset(min(len(held_out), 2048), seed=seed)
    usage = model.cluster_usage(sample.batch(torch.arange(len(sample)), device)[0])
    clusters = usage.argsort(descending=True)[:3].tolist()  # the most used clusters, as fig. 3 shows three
    size = min(model.group_size, len(held_out))
    random_batches = torch.randint(
        len(held_out), (ctx.global_batches, size), generator=torch.Generator().manual_seed(seed)
    )
    means = global_means(model, held_out, random_batches)
    figures = [
        ("sampling_grid.png", plot_sampling_grid(model, clusters, beta_means=means)),
        ("sampling_grid_prior.png", plot_sampling_grid(model, clusters)),
    ]
    if isinstance(held_out, DomainMixture):
        result = domain_alignment(model, held_out, num_batches=ctx.global_batches, seed=seed)
        first, second = (held_out.batch(torch.tensor(b), device)[0] for b in result["batches"])
        title = f"{held_out.domain_names[0]} -> {held_out.domain_names[1]}: beta on rows, z on columns"
    else:
        mnist = ctx.run.settings["data"]["name"] == "mnist"
        result = batch_embedding(model, held_out, num_batches=ctx.global_batches, seed=seed) if mnist else None
        size = min(model.group_size, len(held_out) // 2)
        g = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(held_out), generator=g)[: 2 * size].reshape(2, size)
        first, second = (held_out.batch(i, device)[0] for i in index)
        title = f"two random batches of {size}: beta on rows, z on columns"
    if len(first) >= 2:
        images, betas = model.interpolate(first, second)
        scales = torch.cat([model.global_posterior(first)[1], model.global_posterior(second)[1]])
        figures.append(("interpolation.png", plot_interpolation(images, title, betas, scales)))
    if result is not None:
        figures.append(("global_tsne.png", plot_global_tsne(result)))
    return figures


def check_registered(model: Any) -> None:
    """A ``ValueError`` naming what ``model.evaluations()`` or ``model.figures()`` asks for that nobody registered, so
    a typo fails before training rather than after."""
    for kind, names, registry in (
        ("evaluation", model.evaluations(), EVALUATIONS),
        ("figure", model.figures(), FIGURES),
    ):
        missing = [n for n in names if n not in registry]
        if missing:
            raise ValueError(
                f"{type(model).__name__} asks for the {kind}(s) {', '.join(map(repr, missing))}, which nobody "
                f"registered; register them with @untwine.evaluations.{kind}(name) or drop them"
            )
