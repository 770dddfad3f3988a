r"""What the global latent of a grouped model (UG-VAE, ML-VAE) knows about a batch.

Both experiments use the mean :math:`\mu_\beta` of the global posterior :math:`q(\beta \mid X, Z)` (eq. 9) of whole
batches as a feature vector of the batch:

* :func:`batch_classification`: Table 1 and the supplementary MNIST experiment. Batches of one *type* (digits that
  follow a series, or random batches) are encoded, and a linear and an RBF support-vector machine learn to tell the
  types apart. Training and test batches are drawn from disjoint halves of the images, so a test batch never shares
  an image with a training batch.
* :func:`domain_alignment`: section 4.2 and fig. 5(b). Batches drawn from one domain only, and random batches of the
  mixture, embedded in 2-D by t-SNE together with the path of a :math:`\beta_1 \to \beta_2` interpolation between a
  batch of each domain; how well the two pure kinds separate is measured by the same linear SVM.
* :func:`domain_transfer`: fig. 5(a) as a number. Which latent carries the domain? An image's :math:`z` is decoded
  with the :math:`\beta` of a batch of the other domain (and the other way round), and a pixel classifier says which
  domain the decoded image looks like.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from untwine.data.base import DataError, ImageDataset
from untwine.data.groups import BATCH_KINDS, MODES, DomainMixture, ink, label_batches, structured_batches
from untwine.metrics.utils import eval_mode, integer_labels, model_device, normal_kl, seeded
from untwine.pyro_models.base import GlobalLatent


@dataclass(frozen=True)
class BatchProblem:
    """One row group of the table: batch kinds to tell apart (class ``k`` is ``kinds[k]``) and how series are drawn."""

    kinds: tuple[str, ...]
    mode: str = "digits"

    @property
    def title(self) -> str:
        text = " vs ".join(f"{kind} ({k})" for k, kind in enumerate(self.kinds))
        return text + (" [multi-digit numbers]" if self.mode == "numbers" else "")


#: Two-class problems and their three-class variants with random batches, as in Table 1.
MNIST_PROBLEMS = (
    BatchProblem(("even", "odd")),
    BatchProblem(("even", "odd", "random")),
    BatchProblem(("fibonacci", "primes")),
    BatchProblem(("fibonacci", "primes", "random")),
    BatchProblem(("even", "odd"), "numbers"),
    BatchProblem(("even", "odd", "random"), "numbers"),
)


def _group_size(model: nn.Module, batch_size: int | None) -> int:
    """Images per batch: ``batch_size``, else the model's ``group_size``; a ``TypeError`` for a model without a global
    latent."""
    if not isinstance(model, GlobalLatent):
        raise TypeError(
            f"{type(model).__name__} has no global latent: batch experiments need a model with the GlobalLatent "
            "capability (global_posterior, group_size)"
        )
    size = batch_size if batch_size is not None else model.group_size
    if size < 2:
        raise DataError(f"the global posterior needs batches of at least 2 images, got {size}")
    return int(size)


BatchFeatures = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def batch_features(
    features: BatchFeatures, data: ImageDataset, index: torch.Tensor, device: torch.device, chunk: int = 16
) -> np.ndarray:
    """``features(x)`` of each batch ``index[g]`` (``index`` is ``(G, B)``; ``x`` is ``(G', B, C, H, W)``, a chunk of
    the batches at a time), as ``(G, d)`` float64 numpy."""
    out = []
    for start in range(0, index.shape[0], chunk):
        out.append(features(_batches_of(data, index[start : start + chunk], device)).cpu())
    return torch.cat(out).double().numpy()


@torch.no_grad()
def global_means(model: nn.Module, data: ImageDataset, index: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Posterior mean of :math:`\\beta` for each batch ``index[g]`` (``index`` is ``(G, B)``), as ``(G, g)`` numpy."""
    with eval_mode(model):
        return batch_features(lambda x: model.global_posterior(x)[0], data, index, model_device(model), chunk)


def untrained_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """The same network with fresh weights (every submodule's ``reset_parameters``, seeded), in eval mode."""
    device = model_device(model)
    fresh = copy.deepcopy(model).cpu()  # initialised on the CPU, so the seed gives the same weights on any device
    with seeded(seed):
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return fresh.to(device).eval()


def baseline_features(model: nn.Module, seed: int = 0, width: int = 256) -> dict[str, BatchFeatures]:
    r"""Label-free features of a batch to set beside the global posterior mean: what a score is worth depends on
    whether these already reach it.

    * ``mean pixels``: the batch's mean image;
    * ``random features``: the batch mean of a fixed random ReLU map of the pixels to ``width`` features (weights
      :math:`\mathcal{N}(0, 1/D)`, seeded);
    * ``untrained network``: the global posterior mean of :func:`untrained_copy` of ``model``.
    """
    g = torch.Generator().manual_seed(seed)
    device = model_device(model)
    fresh = untrained_copy(model, seed)
    projection: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def random_features(x: torch.Tensor) -> torch.Tensor:
        d = x[0, 0].numel()
        if d not in projection:
            weight = torch.randn(d, width, generator=g) / math.sqrt(d)
            projection[d] = (weight.to(device), (torch.rand(width, generator=g) - 0.5).to(device))
        weight, bias = projection[d]
        return torch.relu(x.flatten(-3) @ weight + bias).mean(-2)

    return {
        "mean pixels": lambda x: x.flatten(-3).mean(-2),
        "random features": random_features,
        "untrained network": lambda x: fresh.global_posterior(x)[0],
    }


def _svms(seed: int) -> dict:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "linear SVM": make_pipeline(StandardScaler(), SVC(kernel="linear", random_state=seed)),
        "RBF SVM": make_pipeline(StandardScaler(), SVC(kernel="rbf", random_state=seed)),
    }


def _svm_rows(train: list[np.ndarray], test: list[np.ndarray], seed: int) -> list[dict]:
    x_tr, x_te = np.concatenate(train), np.concatenate(test)
    y_tr = np.concatenate([np.full(len(f), k) for k, f in enumerate(train)])
    y_te = np.concatenate([np.full(len(f), k) for k, f in enumerate(test)])
    rows = []
    for name, clf in _svms(seed).items():
        clf.fit(x_tr, y_tr)
        rows.append(
            {
                "classifier": name,
                "train_accuracy": float(clf.score(x_tr, y_tr)),
                "test_accuracy": float(clf.score(x_te, y_te)),
            }
        )
    return rows


def _check_two_domains(data: ImageDataset, experiment: str) -> None:
    if not isinstance(data, DomainMixture) or len(data.domain_names) != 2:
        raise DataError(f"{experiment} needs a mixture of two datasets (e.g. --data mnist+fashion-mnist)")


def _halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2], perm[n // 2 :]


def batch_classification(
    model: nn.Module,
    data: ImageDataset,
    problems: Sequence[BatchProblem] = MNIST_PROBLEMS,
    num_batches: int = 100,
    batch_size: int | None = None,
    seed: int = 0,
    baselines: bool = True,
) -> list[dict]:
    """Train/test accuracy of SVMs that tell batch kinds apart from their global posterior means (Table 1), beside the
    same SVMs on label-free features of the same batches (:func:`baseline_features`).

    :param data: digits with their labels (MNIST, best its test split).
    :param num_batches: batches of each kind for training, and as many again for testing.
    :param batch_size: images per batch (default: the model's ``group_size``, 128 for UG-VAE as in the paper).
    :param baselines: also score the baselines; each row then has ``baselines`` (test accuracy of each),
        ``best_baseline`` (its name) and ``margin`` (the model's test accuracy minus the best baseline's).
    :returns: one row per problem and classifier: ``problem``, ``classifier``, ``train_accuracy``, ``test_accuracy``.
    """
    size = _group_size(model, batch_size)
    labels = integer_labels(data, "structured batches")
    halves = _halves(len(data), seed)
    device = model_device(model)
    representations: dict[str, BatchFeatures] = {"model": lambda x: model.global_posterior(x)[0]}
    if baselines:
        representations.update(baseline_features(model, seed))
    cache: dict[tuple[str, str, str, int], np.ndarray] = {}

    def features(name: str, kind: str, mode: str, half: int) -> np.ndarray:
        key = (name, kind, mode, half)
        if key not in cache:
            part = halves[half]
            kind_seed = seed + 7919 * half + 101 * BATCH_KINDS.index(kind) + 13 * MODES.index(mode) + 1
            index = part[structured_batches(labels[part], kind, num_batches, size, mode, seed=kind_seed)]
            cache[key] = batch_features(representations[name], data, index, device)
        return cache[key]

    rows = []
    with eval_mode(model):
        for problem in problems:
            scored = {}
            for name in representations:
                train = [features(name, kind, problem.mode, 0) for kind in problem.kinds]
                test = [features(name, kind, problem.mode, 1) for kind in problem.kinds]
                scored[name] = _svm_rows(train, test, seed)
            for i, row in enumerate(scored.pop("model")):
                row = {"problem": problem.title, **row}
                if scored:
                    row["baselines"] = {name: r[i]["test_accuracy"] for name, r in scored.items()}
                    row["best_baseline"] = max(row["baselines"], key=row["baselines"].get)
                    row["margin"] = row["test_accuracy"] - row["baselines"][row["best_baseline"]]
                rows.append(row)
    return rows


def format_table(rows: Sequence[dict] | dict[str, Sequence[dict]]) -> str:
    """Rows of :func:`batch_classification` as a Markdown table (problem, classifier, train and test accuracy).

    :param rows: the rows of one model, or ``{model name: rows}`` for several models side by side (same problems in the
        same order), with a train and a test column per model.
    """
    results = {"": rows} if not isinstance(rows, dict) else rows
    names = list(results)
    tables = [list(r) for r in results.values()]
    if any([(r["problem"], r["classifier"]) for r in t] != [(r["problem"], r["classifier"]) for r in tables[0]]
           for t in tables):  # fmt: skip
        raise ValueError("side-by-side tables need the same problems and classifiers in the same order")
    columns = " | ".join(
        f"{n} train accuracy | {n} test accuracy" if n else "train accuracy | test accuracy" for n in names
    )
    lines = [f"| batch categories | classifier | {columns} |", "|" + " --- |" * (2 + 2 * len(names))]
    for i, row in enumerate(tables[0]):
        title = row["problem"] if i == 0 or tables[0][i - 1]["problem"] != row["problem"] else ""
        cells = " | ".join(f"{t[i]['train_accuracy']:.2f} | {t[i]['test_accuracy']:.2f}" for t in tables)
        lines.append(f"| {title} | {row['classifier']} | {cells} |")
    return "\n".join(lines)


def gaussian_information(loc: torch.Tensor | np.ndarray, scale: torch.Tensor | np.ndarray) -> float:
    r"""Mutual information :math:`I(X; \beta)` in nats between a batch :math:`X` and its global latent
    :math:`\beta \sim q(\beta \mid X)`, from the Gaussian posteriors of ``G`` batches drawn from one distribution.

    .. math::

        \hat I(X; \beta) = \sum_{j=1}^{g} \tfrac12 \Big( \log\big(\operatorname{Var}_X \mu_j(X)
            + \mathbb{E}_X \sigma_j^2(X)\big) - \mathbb{E}_X \log \sigma_j^2(X) \Big),

    the entropy of a Gaussian with the aggregate posterior's variance (law of total variance) minus the mean entropy of
    the posteriors :math:`\mathcal{N}(\mu(X), \operatorname{diag}\sigma^2(X))` (eq. 9). With the same
    :math:`\sigma_j` for every batch it is :math:`\sum_j \frac12 \log(1 + s_j^2 / \sigma_j^2)`, :math:`s_j` the
    spread of :math:`\mu_j` across batches. It is exact when :math:`\mu(X)` is Gaussian across batches with
    independent coordinates (the linear-Gaussian case) and otherwise an upper bound up to sampling error: the Gaussian
    has the largest entropy of a given variance, and a joint entropy is at most the sum of its coordinates'.

    :param loc: posterior means ``(G, g)``. :param scale: posterior standard deviations ``(G, g)``.
    """
    loc = torch.as_tensor(loc, dtype=torch.float64)
    scale = torch.as_tensor(scale, dtype=torch.float64)
    if loc.dim() != 2 or loc.shape != scale.shape or loc.shape[0] < 2:
        raise ValueError(
            f"need the posteriors of at least 2 batches as (G, g), got {tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    var = scale.square()
    marginal = loc.var(0, unbiased=True) + var.mean(0)
    return float(0.5 * (marginal.log() - var.log().mean(0)).sum())


def _batches_of(data: ImageDataset, index: torch.Tensor, device: torch.device) -> torch.Tensor:
    return data.batch(index.reshape(-1), device)[0].reshape(*index.shape, *data.image_shape)


@torch.no_grad()
def global_posterior_summary(
    model: nn.Module,
    data: ImageDataset,
    num_batches: int = 30,
    batch_size: int | None = None,
    seed: int = 0,
    index: torch.Tensor | None = None,
    prior_draws: int = 4,
) -> dict[str, float | list[float]]:
    r"""What the global posterior of a batch says, and what the decoder does with it, over ``num_batches`` batches.

    Batches are random (the paper's training batches) unless ``index`` ``(G, B)`` gives them. Entries:

    * ``kl_per_group``: mean :math:`\mathrm{KL}(q(\beta \mid X, Z) \,\|\, \mathcal{N}(0, I))`, nats per group;
    * ``information``: :math:`I(X; \beta)` of :func:`gaussian_information`, nats per group. The KL can be large while
      this is near 0: a product of ``B`` near-identical factors (eq. 9) is narrow, so every batch pays for a
      posterior far from the prior, but the same one for every batch;
    * ``posterior_scale``, ``between_batch_std``: mean posterior standard deviation, and standard deviation of
      :math:`\mu_\beta` across batches, averaged over coordinates;
    * ``mu_min``, ``mu_max`` (per coordinate) and ``mu_span`` (their mean difference): the range :math:`\mu_\beta`
      takes on real batches, which the figures' traversals span;
    * ``log_likelihood``: :math:`\mathbb{E}\log p(x_i \mid z_i, \beta)` per image with :math:`z_i \sim
      q(z \mid x_i)` and :math:`\beta` the batch's posterior mean; ``prior_cost`` and ``swap_cost``: how much lower
      it is (nats per image) with :math:`\beta \sim p(\beta)` (``prior_draws`` draws) or with another batch's
      posterior mean, for the same :math:`z_i`. A global latent the decoder ignores costs nothing to swap;
    * ``prior_distance_sd``: median distance of a prior draw from the batch's posterior mean in posterior standard
      deviations (root mean square over coordinates): how far outside the posteriors the prior's traversals go.
    """
    size = _group_size(model, batch_size)
    g = torch.Generator().manual_seed(seed)
    if index is None:
        index = torch.randint(len(data), (num_batches, size), generator=g)
    device = model_device(model)
    with eval_mode(model):
        x = _batches_of(data, index, device)
        loc, scale = model.global_posterior(x)
        z_loc, z_scale = model.encode(x)
        noise = torch.randn(z_loc.shape, generator=g).to(z_loc)
        z = z_loc + z_scale * noise
        own = model.log_likelihood(x, z, loc.unsqueeze(-2)).mean()
        swap = model.log_likelihood(x, z, loc.roll(1, 0).unsqueeze(-2)).mean()
        prior, distance = [], []
        for _ in range(prior_draws):
            beta = torch.randn(loc.shape, generator=g).to(loc)
            prior.append(model.log_likelihood(x, z, beta.unsqueeze(-2)).mean())
            distance.append(((beta - loc) / scale).square().mean(-1).sqrt())
    kl = normal_kl(loc, scale).sum(-1)
    loc64 = loc.double().cpu()
    return {
        "batches": int(index.shape[0]),
        "batch_size": int(index.shape[1]),
        "kl_per_group": float(kl.mean()),
        "information": gaussian_information(loc64, scale.cpu()),
        "posterior_scale": float(scale.mean()),
        "between_batch_std": float(loc64.std(0).mean()),
        "mu_min": loc64.min(0).values.tolist(),
        "mu_max": loc64.max(0).values.tolist(),
        "mu_span": float((loc64.max(0).values - loc64.min(0).values).mean()),
        "log_likelihood": float(own),
        "prior_cost": float(own - torch.stack(prior).mean()),
        "swap_cost": float(own - swap),
        "prior_distance_sd": float(torch.cat(distance).median()),
    }


@torch.no_grad()
def ink_transfer(
    model: nn.Module,
    data: ImageDataset,
    num_batches: int = 20,
    batch_size: int | None = None,
    quantile: float = 0.25,
    seed: int = 0,
) -> dict[str, float]:
    r"""Does the global latent carry the ink quantity? Measured by swapping :math:`\beta` between thin and thick
    batches.

    Ink is an image's mean pixel value. Batches are drawn from the ``quantile`` of images with least ink ("thin")
    and the one with most ("thick"); batch :math:`j` of each kind is paired. Every image is decoded from its
    posterior mean :math:`z` with its own batch's :math:`\beta` and with the paired batch's, and

    .. math::

        \text{transfer} = \frac{\tfrac12\big[(\bar\imath(z_{thin}, \beta_{thick}) - \bar\imath(z_{thin}, \beta_{thin}))
            + (\bar\imath(z_{thick}, \beta_{thick}) - \bar\imath(z_{thick}, \beta_{thin}))\big]}
            {\bar\imath_{real}(thick) - \bar\imath_{real}(thin)},

    the share of the real ink gap that moving :math:`\beta` alone moves (:math:`\bar\imath`: mean ink of decoded
    images, clamped to [0, 1]). 1: :math:`\beta` carries all of it; 0: none; the decoder's own gap
    (``reconstructed_gap``, both latents own) bounds what a model that reconstructs can show.
    """
    if not 0 < quantile <= 0.5:
        raise ValueError(f"quantile must lie in (0, 0.5], got {quantile}")
    size = _group_size(model, batch_size)
    amount = ink(data)
    order = amount.argsort()
    k = max(int(quantile * len(data)), 1)
    g = torch.Generator().manual_seed(seed)
    pools = {"thin": order[:k], "thick": order[-k:]}
    device = model_device(model)
    beta, z, real = {}, {}, {}
    with eval_mode(model):
        for name, pool in pools.items():
            index = pool[torch.randint(len(pool), (num_batches, size), generator=g)]
            x = _batches_of(data, index, device)
            beta[name] = model.global_posterior(x)[0].unsqueeze(-2)
            z[name] = model.encode(x)[0]
            real[name] = float(amount[index].mean())

        def decoded(local: str, glob: str) -> float:
            return float(model.decode(z[local], beta[glob]).clamp(0, 1).mean())

        gap = real["thick"] - real["thin"]
        moved = 0.5 * (
            decoded("thin", "thick") - decoded("thin", "thin") + decoded("thick", "thick") - decoded("thick", "thin")
        )
        reconstructed = decoded("thick", "thick") - decoded("thin", "thin")
    return {
        "real_gap": gap,
        "reconstructed_gap": reconstructed,
        "beta_swap_gap": moved,
        "transfer": moved / gap if gap > 0 else float("nan"),
    }


def tsne(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D t-SNE embedding of ``features`` ``(n, d)`` (PCA initialisation, perplexity at most 30)."""
    from sklearn.manifold import TSNE

    n = len(features)
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed).fit_transform(features)


def batch_embedding(
    model: nn.Module,
    data: ImageDataset,
    kinds: Sequence[str] = ("even", "odd", "random"),
    mode: str = "digits",
    num_batches: int = 50,
    batch_size: int | None = None,
    seed: int = 0,
) -> dict:
    """Fig. 7 for digits: t-SNE of the global posterior means of structured batches of each kind.

    :returns: ``kinds``, ``labels`` (kind of each point), ``features`` ``(n, g)`` and ``embedding`` ``(n, 2)``, the
        layout :func:`~untwine.plots.global_latents.plot_global_tsne` draws.
    """
    size = _group_size(model, batch_size)
    blocks = [
        global_means(model, data, structured_batches(data.targets, kind, num_batches, size, mode, seed=seed + k))
        for k, kind in enumerate(kinds)
    ]
    features = np.concatenate(blocks)
    labels = [kind for kind in kinds for _ in range(num_batches)]
    return {"kinds": list(kinds), "labels": labels, "features": features, "embedding": tsne(features, seed)}


def domain_alignment(
    model: nn.Module,
    data: DomainMixture,
    num_batches: int = 50,
    batch_size: int | None = None,
    steps: int = 7,
    seed: int = 0,
    embed: bool = True,
) -> dict:
    """Global posterior means of pure-domain and mixed batches, their t-SNE embedding, and domain separability.

    :param data: a :class:`~untwine.data.groups.DomainMixture` of two domains (best its test split).
    :param steps: points on the :math:`\\beta_1 \\to \\beta_2` path between the first batch of each pure kind (embedded
        with the batches, as in fig. 5(b)).
    :returns: ``kinds`` (names, the pure domains first, then ``"mixed"`` and ``"interpolation"``), ``labels`` (kind of
        each point), ``embedding`` ``(n, 2)``, ``features`` ``(n, g)``, ``batches`` (the first batch index of each
        pure domain), and ``separability``: linear and RBF SVM accuracy, pure domain 0 vs pure domain 1, trained and
        tested on batches from disjoint halves of the images.
    :param embed: compute the t-SNE embedding (``False``: ``embedding`` is ``None``, for the separability alone).
    """
    _check_two_domains(data, "domain alignment")
    size = _group_size(model, batch_size)
    g = torch.Generator().manual_seed(seed)
    halves = _halves(len(data), seed)
    feats: dict[tuple[str, int], np.ndarray] = {}
    first: list[torch.Tensor] = []
    for half, part in enumerate(halves):
        domains = data.domains[part]
        for k in range(2):
            index = part[label_batches(domains, torch.full((num_batches, size), k), g)]
            feats[(data.domain_names[k], half)] = global_means(model, data, index)
            if half == 0:
                first.append(index[0])
        feats[("mixed", half)] = global_means(
            model, data, part[torch.randint(len(part), (num_batches, size), generator=g)]
        )
    device = model_device(model)
    batch1, batch2 = (data.batch(i, device)[0] for i in first)
    _, path = model.interpolate(batch1, batch2, steps=steps)
    kinds = [*data.domain_names, "mixed", "interpolation"]
    blocks = [feats[(kind, half)] for half in (0, 1) for kind in kinds[:3]] + [path.double().cpu().numpy()]
    labels = [kind for half in (0, 1) for kind in kinds[:3] for _ in range(num_batches)] + ["interpolation"] * steps
    features = np.concatenate(blocks)
    separability = _svm_rows(
        [feats[(kinds[0], 0)], feats[(kinds[1], 0)]], [feats[(kinds[0], 1)], feats[(kinds[1], 1)]], seed
    )
    return {
        "kinds": kinds,
        "labels": labels,
        "features": features,
        "embedding": tsne(features, seed) if embed else None,
        "batches": [b.tolist() for b in first],
        "separability": separability,
    }


@torch.no_grad()
def domain_transfer(
    model: nn.Module,
    data: DomainMixture,
    num_batches: int = 20,
    batch_size: int | None = None,
    classifier_images: int = 4000,
    seed: int = 0,
) -> dict[str, float]:
    r"""Does the global latent carry the domain (fig. 5(a))? Measured by swapping latents between pure batches.

    A linear pixel classifier (ridge regression on one half of the images) learns the domain. On the other half,
    batch :math:`j` of domain 0 is paired with batch :math:`j` of domain 1; every image is decoded from its own
    posterior mean :math:`z` with

    * its own batch's :math:`\beta` (``reconstruction_accuracy``: decoded images classified as their own domain),
    * the other batch's :math:`\beta` (``beta_swap_flip_rate``: fraction now classified as :math:`\beta`'s domain).

    The classifier is binary, so the rest of the swapped images (``1 - beta_swap_flip_rate``) follow their :math:`z`.
    A global latent that holds the domain gives a rate near 1; a model whose local space carries it, near 0 (for a
    model that reconstructs; an untrained one gives 0.5 throughout).
    ``classifier_accuracy`` is the pixel classifier's accuracy on real held-out images.
    """
    from sklearn.linear_model import RidgeClassifier

    _check_two_domains(data, "domain transfer")
    size = _group_size(model, batch_size)
    device = model_device(model)
    fit_half, test_half = _halves(len(data), seed)
    fit_idx = fit_half[:classifier_images]
    pixels = math.prod(data.image_shape)
    classifier = RidgeClassifier().fit(data.batch(fit_idx)[0].flatten(1).numpy(), data.domains[fit_idx].numpy())

    def domain_of(images: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(classifier.predict(images.clamp(0, 1).flatten(-3).reshape(-1, pixels).numpy()))

    g = torch.Generator().manual_seed(seed)
    part = test_half
    with eval_mode(model):
        beta, z = [], []
        for k in range(2):
            index = part[label_batches(data.domains[part], torch.full((num_batches, size), k), g)]
            images = data.batch(index.reshape(-1), device)[0].reshape(num_batches, size, *data.image_shape)
            beta.append(model.global_posterior(images)[0].unsqueeze(-2))  # (nb, 1, g)
            z.append(model.encode(images)[0])  # (nb, B, dz)
        held = part[:classifier_images]
        accuracy = float(classifier.score(data.batch(held)[0].flatten(1).numpy(), data.domains[held].numpy()))
        own = [domain_of(model.decode(z[k], beta[k]).cpu()) == k for k in range(2)]
        beta_swap = [domain_of(model.decode(z[k], beta[1 - k]).cpu()) == 1 - k for k in range(2)]

    def rate(flags: list[torch.Tensor]) -> float:
        return float(torch.cat(flags).float().mean())

    return {
        "classifier_accuracy": accuracy,
        "reconstruction_accuracy": rate(own),
        "beta_swap_flip_rate": rate(beta_swap),
    }
