"""Source of a model written outside untwine, for the tests that train it as ``module:Class``."""

import textwrap

LAPLACE = textwrap.dedent(
    '''
    """A VAE with a Laplace(0, 1) prior, written outside untwine."""
    import pyro.distributions as dist
    import torch
    from torch import nn

    from untwine.pyro_models import VAE


    class LaplacePrior(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.register_buffer("loc", torch.zeros(d))
            self.register_buffer("scale", torch.ones(d))

        def forward(self):
            return dist.Laplace(self.loc, self.scale).to_event(1)


    class LaplaceVAE(VAE):
        """VAE with a Laplace(0, 1) prior on every latent coordinate."""

        name = "laplace-vae"

        def __init__(self, config=None):
            config = config if config is not None else self.Config()
            super().__init__(config, LaplacePrior(config.latent_dim))
    '''
)
