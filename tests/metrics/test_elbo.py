import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import closed_form, linear_gaussian_vae

from untwine.data import ImageDataset
from untwine.metrics import evaluate_elbo
from untwine.pyro_models.base import GlobalLatent, Model


@pytest.mark.parametrize("beta", [1.0, 5.0])
def test_dataset_elbo_matches_the_closed_form_and_ignores_beta(beta):
    vae = linear_gaussian_vae(beta)
    images = torch.randn(64, 1, 1, 3)
    data = ImageDataset(images, torch.zeros(64, dtype=torch.long), 1.0, "toy")
    torch.manual_seed(0)
    got = evaluate_elbo(vae, data, batch_size=20, num_particles=400)
    with torch.no_grad():
        exact, kl = closed_form(vae, images, beta=1.0)  # evaluation reports the true ELBO, whatever beta was trained
    assert got["elbo"] == pytest.approx(exact.item() / 64, abs=0.05)
    assert got["kl"] == pytest.approx(kl.item() / 64, abs=0.05)
    assert got["elbo"] == pytest.approx(got["log_likelihood"] - got["kl"], abs=1e-9)


def test_evaluation_restores_the_training_mode():
    vae = linear_gaussian_vae(1.0).train()
    data = ImageDataset(torch.randn(4, 1, 1, 3), torch.zeros(4, dtype=torch.long), 1.0, "toy")
    evaluate_elbo(vae, data)
    assert vae.training


class Recorder:
    """A one-latent model/guide pair that records the batch sizes it is evaluated on (mixed into a module)."""

    def setup(self):
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def model(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.anchor, 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).expand([x.shape[0], 3]).to_event(1), obs=x.reshape(-1, 3))

    def guide(self, x, y=None):
        self.seen.append(x.shape[0])
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.anchor, 1.0))


class Plain(Recorder, torch.nn.Module):
    group_size = 4  # an attribute alone is not the contract: read as ungrouped

    def __init__(self):
        super().__init__()
        self.setup()


class GroupedLatent(Recorder, torch.nn.Module, GlobalLatent):
    group_size = 4

    def __init__(self):
        super().__init__()
        self.setup()


class GroupedModel(Recorder, Model):
    group_size = 4

    def __init__(self):
        super().__init__()
        self.setup()


def test_batches_hold_whole_groups_only_for_a_model_that_declares_them():
    data = ImageDataset(torch.randn(10, 1, 1, 3), torch.zeros(10, dtype=torch.long), 1.0, "toy")
    plain = Plain()
    evaluate_elbo(plain, data, batch_size=6)
    assert plain.seen == [6, 4]
    for grouped in (GroupedLatent(), GroupedModel()):
        evaluate_elbo(grouped, data, batch_size=6)
        assert grouped.seen == [4, 4], type(grouped).__name__  # the last 2 images make no whole group
