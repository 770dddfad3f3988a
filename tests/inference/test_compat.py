"""Pyro's private names live only in untwine/inference/_compat.py, and a Pyro release that renames one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

from untwine.inference import _compat
from untwine.inference.elbo import SyncFreeTrace_ELBO

PACKAGE = Path(__file__).resolve().parents[2] / "untwine"
COMPAT = PACKAGE / "inference" / "_compat.py"


@pytest.mark.parametrize(
    "owner, name", _compat.PRIVATE_NAMES, ids=[f"{o.__name__}.{n}" for o, n in _compat.PRIVATE_NAMES]
)
def test_the_private_names_untwine_uses_exist_in_the_installed_pyro(owner, name):
    assert hasattr(owner, name), (
        f"pyro-ppl {pyro.__version__} has no {owner.__module__}.{owner.__name__}.{name}: untwine/inference/_compat.py "
        f"was written against the series pinned in pyproject.toml and must be updated for this release"
    )


def _model(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(pyro.sample("z", dist.Normal(0.0, 1.0)), 1.0), obs=x)


def _guide(x):
    loc = pyro.param("loc", torch.zeros(x.shape[0]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(loc, 1.0))


@pytest.mark.parametrize("vectorize, pairs, batch_shape", [(False, 3, (4,)), (True, 1, (3, 4))])
def test_particle_traces_draws_the_particles_of_the_elbo(vectorize, pairs, batch_shape):
    # what untwine's ELBOs rely on: one scored pair per particle, or one pair for all of them when vectorised
    pyro.clear_param_store()
    elbo = SyncFreeTrace_ELBO(num_particles=3, vectorize_particles=vectorize, max_plate_nesting=1)
    traces = list(_compat.particle_traces(elbo, _model, _guide, (torch.randn(4),), {}))
    assert len(traces) == pairs
    for model_trace, guide_trace in traces:
        assert model_trace.nodes["z"]["log_prob"].shape == batch_shape
        assert guide_trace.nodes["z"]["score_parts"].log_prob.shape == batch_shape
        assert model_trace.nodes["z"]["value"] is guide_trace.nodes["z"]["value"]


def private_pyro_names(source: str) -> list[str]:
    """Every private Pyro name a module's source reaches: a ``_``-prefixed name imported from ``pyro.*``, an import
    from a private Pyro module, or a ``_``-prefixed attribute of a name bound to a Pyro module or object."""
    found = []
    pyro_names = set()  # local names bound to Pyro modules or objects

    def private(part: str) -> bool:
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pyro" or alias.name.startswith("pyro."):
                    if any(private(p) for p in alias.name.split(".")):
                        found.append(alias.name)
                    pyro_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pyro" or node.module.startswith("pyro."):
                module_private = any(private(p) for p in node.module.split("."))
                for alias in node.names:
                    if module_private or private(alias.name):
                        found.append(f"{node.module}.{alias.name}")
                    pyro_names.add(alias.asname or alias.name)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in pyro_names:
                found.append(ast.unparse(node))
    return found


def test_the_scan_finds_each_kind_of_private_name():
    source = (
        "import pyro\nimport pyro.ops._private as p\nfrom pyro.infer.trace_elbo import _compute_log_r\n"
        "from pyro.infer import Trace_ELBO\nfrom pyro.contrib._x import thing\n"
        "pyro.infer.util._helper(1)\nTrace_ELBO._get_traces\nself._get_traces\n"
        "from pyro.infer import Trace_ELBO as T\nT.__init__\n"
    )
    assert sorted(private_pyro_names(source)) == sorted(
        [
            "pyro.ops._private",
            "pyro.infer.trace_elbo._compute_log_r",
            "pyro.contrib._x.thing",
            "pyro.infer.util._helper",
            "Trace_ELBO._get_traces",
        ]
    )


def test_no_module_outside_compat_uses_a_private_pyro_name():
    offenders = {
        str(path.relative_to(PACKAGE.parent)): names
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != COMPAT and (names := private_pyro_names(path.read_text()))
    }
    assert not offenders, f"private Pyro names belong in untwine/inference/_compat.py only: {offenders}"
