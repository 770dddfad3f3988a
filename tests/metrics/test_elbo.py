import pytest
import torch
from linear_gaussian import closed_form, linear_gaussian_vae

from untwine.data import ImageDataset
from untwine.metrics import evaluate_elbo


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
