"""untwine: disentangled-representation VAEs as composable Pyro model/guide pairs."""

__version__ = "0.1.0"
