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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from untwine.data.base import DataError, ImageDataset
from untwine.data.groups import BATCH_KINDS, MODES, DomainMixture, label_batches, structured_batches
from untwine.metrics.utils import eval_mode, integer_labels, model_device, normal_kl
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


@torch.no_grad()
def global_means(model: nn.Module, data: ImageDataset, index: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Posterior mean of :math:`\\beta` for each batch ``index[g]`` (``index`` is ``(G, B)``), as ``(G, g)`` numpy."""
    device = model_device(model)
    with eval_mode(model):
        out = []
        for start in range(0, index.shape[0], chunk):
            rows = index[start : start + chunk]
            x, _ = data.batch(rows.reshape(-1), device)
            out.append(model.global_posterior(x.reshape(*rows.shape, *x.shape[1:]))[0].cpu())
    return torch.cat(out).double().numpy()


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
) -> list[dict]:
    """Train/test accuracy of SVMs that tell batch kinds apart from their global posterior means (Table 1).

    :param data: digits with their labels (MNIST, best its test split).
    :param num_batches: batches of each kind for training, and as many again for testing.
    :param batch_size: images per batch (default: the model's ``group_size``, 128 for UG-VAE as in the paper).
    :returns: one row per problem and classifier: ``problem``, ``classifier``, ``train_accuracy``, ``test_accuracy``.
    """
    size = _group_size(model, batch_size)
    labels = integer_labels(data, "structured batches")
    halves = _halves(len(data), seed)
    cache: dict[tuple[str, str, int], np.ndarray] = {}

    def features(kind: str, mode: str, half: int) -> np.ndarray:
        key = (kind, mode, half)
        if key not in cache:
            part = halves[half]
            kind_seed = seed + 7919 * half + 101 * BATCH_KINDS.index(kind) + 13 * MODES.index(mode) + 1
            index = structured_batches(labels[part], kind, num_batches, size, mode, seed=kind_seed)
            cache[key] = global_means(model, data, part[index])
        return cache[key]

    rows = []
    for problem in problems:
        train = [features(kind, problem.mode, 0) for kind in problem.kinds]
        test = [features(kind, problem.mode, 1) for kind in problem.kinds]
        rows += [{"problem": problem.title, **row} for row in _svm_rows(train, test, seed)]
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


@torch.no_grad()
def global_posterior_summary(
    model: nn.Module, data: ImageDataset, num_batches: int = 30, batch_size: int | None = None, seed: int = 0
) -> dict[str, float]:
    r"""How much a random batch's global posterior says, and how much it differs from batch to batch.

    Over ``num_batches`` random batches: ``kl_per_group`` (mean :math:`\mathrm{KL}(q(\beta \mid X, Z) \,\|\,
    \mathcal{N}(0, I))`, nats per group), ``posterior_scale`` (mean posterior standard deviation per coordinate) and
    ``between_batch_std`` (standard deviation of :math:`\mu_\beta` across the batches, averaged over coordinates). A
    spread far below the posterior scale means :math:`\beta` is close to one value for every random batch.
    """
    size = _group_size(model, batch_size)
    index = torch.randint(len(data), (num_batches, size), generator=torch.Generator().manual_seed(seed))
    device = model_device(model)
    with eval_mode(model):
        x = data.batch(index.reshape(-1), device)[0].reshape(num_batches, size, *data.image_shape)
        loc, scale = model.global_posterior(x)
    kl = normal_kl(loc, scale).sum(-1)
    return {
        "kl_per_group": float(kl.mean()),
        "posterior_scale": float(scale.mean()),
        "between_batch_std": float(loc.std(0).mean()),
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
