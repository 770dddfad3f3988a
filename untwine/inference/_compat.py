"""The one place where untwine relies on a private name of Pyro.

Pyro's ELBOs draw their particles in ``ELBO._get_traces`` (one ``(model_trace, guide_trace)`` pair per particle,
or one pair for all of them under ``vectorize_particles``, after each subclass's own ``_get_trace`` checks).
Pyro has no public function for that, and drawing the particles any other way would copy Pyro's vectorisation and
its guess of ``max_plate_nesting``. pyproject.toml pins the Pyro series this was checked against;
``tests/inference/test_compat.py`` fails, naming the installed Pyro version, if a release renames what is used here.
"""

from __future__ import annotations

from collections.abc import Iterator

from pyro.infer import ELBO
from pyro.poutine import Trace

#: ``(owner, attribute)`` of every private Pyro name used in this module
PRIVATE_NAMES: tuple[tuple[type, str], ...] = ((ELBO, "_get_traces"),)


def particle_traces(elbo: ELBO, model, guide, args: tuple, kwargs: dict) -> Iterator[tuple[Trace, Trace]]:
    """``(model_trace, guide_trace)`` of each particle, drawn exactly as ``elbo``'s own ``differentiable_loss`` draws
    them: log-densities and score parts computed, subsample sites pruned, particles vectorised if asked."""
    return elbo._get_traces(model, guide, args, kwargs)
