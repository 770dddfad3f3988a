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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from untwine.data.base import DataError, ImageDataset
from untwine.data.groups import BATCH_KINDS, MODES, DomainMixture, label_batches, structured_batches
from untwine.metrics.decomposition import _model_device


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
    size = batch_size if batch_size is not None else getattr(model, "group_size", None)
    if size is None or not hasattr(model, "global_posterior"):
        raise TypeError(f"{type(model).__name__} has no global latent (global_posterior/group_size)")
    if size < 2:
        raise DataError(f"the global posterior needs batches of at least 2 images, got {size}")
    return int(size)


@torch.no_grad()
def global_means(model: nn.Module, data: ImageDataset, index: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Posterior mean of :math:`\\beta` for each batch ``index[g]`` (``index`` is ``(G, B)``), as ``(G, g)`` numpy."""
    device = _model_device(model, None)
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, index.shape[0], chunk):
            rows = index[start : start + chunk]
            x, _ = data.batch(rows.reshape(-1), device)
            out.append(model.global_posterior(x.reshape(*rows.shape, *x.shape[1:]))[0].cpu())
    finally:
        model.train(was_training)
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
    labels = data.targets
    if labels.dim() != 1 or labels.is_floating_point():
        raise DataError(f"{data.name}: structured batches need one integer label per image")
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


def format_table(rows: Sequence[dict]) -> str:
    """Rows of :func:`batch_classification` as a Markdown table (problem, classifier, train and test accuracy)."""
    lines = ["| batch categories | classifier | train accuracy | test accuracy |", "| --- | --- | --- | --- |"]
    previous = None
    for row in rows:
        title = row["problem"] if row["problem"] != previous else ""
        previous = row["problem"]
        lines.append(f"| {title} | {row['classifier']} | {row['train_accuracy']:.2f} | {row['test_accuracy']:.2f} |")
    return "\n".join(lines)


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
) -> dict:
    """Global posterior means of pure-domain and mixed batches, their t-SNE embedding, and domain separability.

    :param data: a :class:`~untwine.data.groups.DomainMixture` of two domains (best its test split).
    :param steps: points on the :math:`\\beta_1 \\to \\beta_2` path between the first batch of each pure kind (embedded
        with the batches, as in fig. 5(b)).
    :returns: ``kinds`` (names, the pure domains first, then ``"mixed"`` and ``"interpolation"``), ``labels`` (kind of
        each point), ``embedding`` ``(n, 2)``, ``features`` ``(n, g)``, ``batches`` (the first batch index of each
        pure domain), and ``separability``: linear and RBF SVM accuracy, pure domain 0 vs pure domain 1, trained and
        tested on batches from disjoint halves of the images.
    """
    if not isinstance(data, DomainMixture) or len(data.domain_names) != 2:
        raise DataError("domain alignment needs a mixture of two datasets (e.g. --data mnist+fashion-mnist)")
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
    device = _model_device(model, None)
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
        "embedding": tsne(features, seed),
        "batches": [b.tolist() for b in first],
        "separability": separability,
    }
