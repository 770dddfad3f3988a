"""untwine: disentangled-representation VAEs as composable Pyro model/guide pairs.

Subpackages: :mod:`untwine.distributions` (the Lp-nested ISA and Dirichlet class priors), :mod:`untwine.pyro_models`
(the model/guide pairs and their registry), :mod:`untwine.inference` (objectives and the training loop),
:mod:`untwine.metrics`, :mod:`untwine.plots`, :mod:`untwine.data`; run folders in :mod:`untwine.experiment`.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "data", "distributions", "experiment", "inference", "metrics", "plots", "pyro_models"]
