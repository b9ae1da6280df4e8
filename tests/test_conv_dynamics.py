"""Dynamics on the latent map (rnn_type 'convlstm', models/conv_dynamics.py): the MDN-RNN's
and the flow head's contracts on a spatial latent, a move of the input is the same move of
the output (what the option is for), a stream is the same however it is chunked, and a tiny
run trains, saves, loads and dreams."""
import pytest
import torch

from everloop import checkpoint, rollout
from everloop.errors import EverloopError
from everloop.models.conv_dynamics import ConvFlowHead, ConvMDNRNN
from everloop.models.worldmodel_config import WorldModelConfig, check
from everloop.train import TrainArgs, train

G, C, H = 8, 2, 6  # grid, latent channels per cell, hidden channels per cell
L = C * G * G


def maps(z: torch.Tensor) -> torch.Tensor:
    return z.view(*z.shape[:-1], -1, G, G)


def test_shapes_and_the_hidden_state_carries_over_chunks():
    torch.manual_seed(0)
    rnn = ConvMDNRNN(L, G, H, mixtures=3).eval()
    z = torch.randn(2, 7, L)
    (logits, mu, log_sigma), _ = rnn(z)
    assert logits.shape == mu.shape == log_sigma.shape == (2, 7, L, 3)
    assert torch.isfinite(log_sigma).all() and (log_sigma >= torch.log(torch.tensor(0.01)) - 1e-6).all()
    whole, _ = rnn.features(z)
    first, hidden = rnn.features(z[:, :3])
    rest, _ = rnn.features(z[:, 3:], hidden)
    assert whole.shape == (2, 7, rnn.feature_size) == (2, 7, H * G * G)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)


def test_a_shifted_scene_gives_the_shifted_prediction():
    """Convolutions share one rule over the map: content one cell to the right is predicted
    one cell to the right, wherever the zero padding of the borders does not reach (one step:
    2 cells in for the RNN, 1 + 4 for one Euler step of the head; a 16 x 16 map). A flat
    LSTM over the same numbers would have no reason to."""
    torch.manual_seed(1)
    g = 16
    rnn = ConvMDNRNN(C * g * g, g, H, mixtures=3).eval()
    head = ConvFlowHead(C * g * g, g, H, width=8).eval()
    z = torch.zeros(1, 1, C, g, g)
    z[..., 6:10, 6:9] = torch.randn(1, 1, C, 4, 3)  # a blob in the middle of the map
    moved = torch.roll(z, 1, -1)
    (_, mu, _), _ = rnn(z.flatten(2))
    (_, mu_moved, _), _ = rnn(moved.flatten(2))
    mu, mu_moved = mu.view(C, g, g, 3), mu_moved.view(C, g, g, 3)
    torch.testing.assert_close(torch.roll(mu, 1, 2)[:, 3:13, 4:13], mu_moved[:, 3:13, 4:13])
    assert not torch.allclose(mu[:, 3:13, 4:13], mu_moved[:, 3:13, 4:13])
    h, _ = rnn.features(z.flatten(2))
    h_moved, _ = rnn.features(moved.flatten(2))
    noise = torch.zeros(1, C * g * g)
    drawn = head.sample(h[:, -1], noise, 1).view(C, g, g)
    drawn_moved = head.sample(h_moved[:, -1], noise, 1).view(C, g, g)
    torch.testing.assert_close(torch.roll(drawn, 1, -1)[:, 7:9, 8:9], drawn_moved[:, 7:9, 8:9])
    assert not torch.allclose(drawn[:, 7:9, 8:9], drawn_moved[:, 7:9, 8:9])


def test_one_step_reaches_only_nearby_cells():
    rnn = ConvMDNRNN(L, G, H, mixtures=3).eval()
    z = torch.zeros(1, 1, L)
    poked = z.clone()
    maps(poked)[..., 0, 0] = 1.0
    diff = (rnn.features(z)[0] - rnn.features(poked)[0]).view(H, G, G).abs().amax(0)
    assert diff[0, 0] > 0 and diff[1, 1] > 0  # the 3 x 3 gates: a cell each way
    assert diff[2:].abs().sum() == 0 and diff[:, 2:].abs().sum() == 0


def test_convlstm_needs_a_latent_grid():
    check(WorldModelConfig(rnn_type="convlstm", latent_grid=8, z_dim=256), ("l1", "l2", "l1+l2"))
    with pytest.raises(EverloopError, match="latent_grid"):
        check(WorldModelConfig(rnn_type="convlstm"), ("l1", "l2", "l1+l2"))


def test_a_tiny_convlstm_run_trains_saves_loads_and_dreams(tmp_path, tiny_data):
    args = TrainArgs(data=str(tiny_data), out=str(tmp_path / "run"), family="worldmodel", preset="tiny",
                     sample_every=0, progress=False, precision="fp32", steps=8,
                     overrides={"latent_grid": 2, "rnn_type": "convlstm"})
    run = train(args)
    model, _ = checkpoint.load_run(run)
    again, _ = checkpoint.load_run(run)
    z = next(rollout.latents(model, batch=2, seed=3, chunk=40))
    assert torch.isfinite(z).all() and (z[:, 1:] - z[:, :-1]).abs().sum() > 0
    torch.testing.assert_close(z, next(rollout.latents(again, batch=2, seed=3, chunk=40)), rtol=0, atol=0)
