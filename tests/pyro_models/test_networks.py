import pytest
import torch

from untwine.pyro_models.networks import NETWORKS, ClusterHeads, NetworkError, build_networks, default_network

SHAPES = {
    "chen-mlp": [(1, 64, 64), (1, 28, 28), (3, 32, 32)],
    "chen-conv": [(1, 64, 64), (3, 64, 64)],
    "burgess-conv": [(1, 64, 64), (3, 64, 64)],
    "mlp": [(1, 28, 28), (1, 32, 32), (3, 64, 64)],
    "mlp-256": [(1, 28, 28), (3, 32, 32)],
    "conv": [(1, 28, 28), (1, 32, 32), (3, 32, 32)],
}


def test_every_registered_network_has_shape_cases():
    assert set(SHAPES) == set(NETWORKS)


@pytest.mark.parametrize("name,shape", [(n, s) for n, shapes in SHAPES.items() for s in shapes])
def test_encoder_and_decoder_map_between_images_and_codes(name, shape):
    enc, dec = build_networks(name, shape, latent_dim=6)
    x = torch.rand(5, *shape)
    assert enc(x).shape == (5, 12)
    assert dec(torch.randn(5, 6)).shape == (5, *shape)
    # extra leading dimensions (vectorised ELBO particles) pass through the decoder
    assert dec(torch.randn(2, 5, 6)).shape == (2, 5, *shape)


def test_encoder_output_width_can_differ_from_twice_the_latent():
    enc, dec = build_networks("mlp", (1, 28, 28), latent_dim=3, encoder_out=7)
    assert enc(torch.rand(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize(
    "name,shape", [("chen-conv", (1, 28, 28)), ("burgess-conv", (1, 32, 32)), ("conv", (1, 64, 64))]
)
def test_conv_networks_reject_image_sizes_they_cannot_handle(name, shape):
    with pytest.raises(NetworkError, match="takes"):
        build_networks(name, shape, 4)


def test_unknown_network_and_bad_shape_are_clear_errors():
    with pytest.raises(NetworkError, match="unknown network 'resnet'"):
        build_networks("resnet", (1, 28, 28), 4)
    with pytest.raises(NetworkError, match=r"\(C, H, W\)"):
        build_networks("mlp", (28, 28), 4)


def test_default_network_follows_the_papers():
    assert default_network((1, 64, 64)) == "chen-mlp"
    assert default_network((1, 28, 28)) == "mlp"
    enc, dec = build_networks("auto", (1, 64, 64), 10)
    widths = [m.out_features for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [1200, 1200, 20]
    acts = [type(m).__name__ for m in dec.modules() if not isinstance(m, (torch.nn.Sequential, type(dec)))]
    assert acts.count("Tanh") == 3


def test_cluster_heads_are_k_separate_mlps_evaluated_in_one_call():
    torch.manual_seed(0)
    heads = ClusterHeads(num_heads=3, in_dim=4, hidden=5, out_dim=2)
    h = torch.randn(7, 6, 4)
    out = heads(h)
    assert out.shape == (7, 6, 3, 2)
    for k in range(3):  # head k by hand: relu(h W1_k + b1_k) W2_k + b2_k
        hidden = torch.relu(h @ heads.w1[k] + heads.b1[k])
        assert torch.allclose(out[..., k, :], hidden @ heads.w2[k] + heads.b2[k], atol=1e-6)
