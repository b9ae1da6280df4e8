"""Dynamics on a spatial latent (`rnn_type` 'convlstm', needs `latent_grid` G > 0): the
MDN-RNN and the flow head of World Models, made convolutional over the G x G map of latent
cells, so that what moves in the frame can move across the map: a cell's next code is
drawn from its neighbourhood, the same rule everywhere (a blob crossing the frame is the
same event at every place).

Why (eighteenth session, docs/fidelity.md): goop's VAE with one 32-d latent reconstructs
its held-out footage at 13.0 dB (24.6 on the training frames: it has the 2-minute clip by
heart), with an 8 x 8 map of 4 channels at 21.8 dB; but the flat LSTM and MLP flow head
over that 256-d map dreamed worse than before (flow_hist 5-6x the band, spectrum to 14x at
t = 1k): they see 256 numbers with no notion of where each lies.

Layout: a flat latent [B, L] is the VAE's map [B, c, G, G] flattened (L = c G^2); the
RNN's features [B, T, H G^2] are its hidden map flattened, so everything that stores or
passes a hidden state (the flow stage's pairs, the dream fit, rollouts) is unchanged.
Reach per step: the LSTM's 3 x 3 gates see a cell each way, the MDN head's 3 x 3 conv one
more, the flow head's four convs four more; at 64 x 64 a cell is 8 pixels, and goop's
blobs travel 12-24 pixels between two model steps (clip_stride 6)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import EverloopError
from .flow_head import FlowHead
from .mdn import MDNRNN, floor_log_sigma

GATE_KERNEL = 3  # reach of one step: a cell each way (5 x 5 gates, 32 channels: 0.76 RNN steps/s, the flat LSTM 7)


def cell_channels(z_dim: int, grid: int) -> int:
    """Latent channels per cell of the G x G map."""
    if grid < 1 or z_dim % (grid * grid):
        raise EverloopError(f"rnn_type 'convlstm' needs latent_grid > 0 dividing z_dim {z_dim} "
                            f"into grid x grid channels (latent_grid {grid})")
    return z_dim // (grid * grid)


class ConvLSTMCell(nn.Module):
    """One step of a convolutional LSTM (Shi et al. 2015): the gates are a conv of the input
    and hidden maps; x [B, C, G, G] -> h [B, H, G, G] and the new (h, c)."""

    def __init__(self, inputs: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(inputs + hidden, 4 * hidden, GATE_KERNEL, 1, GATE_KERNEL // 2)

    def forward(self, x: torch.Tensor, state=None):
        if state is None:
            zero = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zero, zero)
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvMDNRNN(MDNRNN):
    """MDNRNN's contract (features, forward, self_fed) on the latent map: z [B, T, L] ->
    mixture parameters of every latent dimension [B, T, L, K]; `hidden` channels per cell."""

    def __init__(self, z_dim: int, grid: int, hidden: int, mixtures: int, sigma_min: float = 0.01,
                 dropout: float = 0.0):
        nn.Module.__init__(self)  # MDNRNN's own would build a flat LSTM
        self._mixture_setup(z_dim, mixtures, sigma_min, dropout, feature_size=hidden * grid * grid)
        self.grid, self.chans = grid, cell_channels(z_dim, grid)
        self.cell = ConvLSTMCell(self.chans, hidden)
        self.head = nn.Conv2d(hidden, 3 * mixtures * self.chans, 3, 1, 1)

    def features(self, z: torch.Tensor, hidden=None):
        b, t, _ = z.shape
        x = self.drop(z).view(b, t, self.chans, self.grid, self.grid)
        outs = []
        for i in range(t):
            h, hidden = self.cell(x[:, i], hidden)
            outs.append(h)
        return torch.stack(outs, 1).flatten(2), hidden

    def forward(self, z: torch.Tensor, hidden=None):
        out, hidden = self.features(z, hidden)
        b, t, g = out.shape[0], out.shape[1], self.grid
        p = self.head(self.drop(out).view(b * t, -1, g, g))  # [B T, c 3K, G, G]
        p = p.view(b, t, self.chans, 3 * self.k, g, g).permute(0, 1, 2, 4, 5, 3).reshape(b, t, self.z_dim, 3 * self.k)
        logits, mu, raw = p.split(self.k, dim=-1)
        return (logits, mu, floor_log_sigma(raw, self.sigma_min)), hidden


class ConvFlowHead(FlowHead):
    """FlowHead's contract (v(x, s, h), loss, sample, train_updates) as convs over the map:
    x [B, L], s [B, 1], h [B, H G^2] -> velocity [B, L]; `width` channels."""

    def __init__(self, z_dim: int, grid: int, hidden: int, width: int, dropout: float = 0.0):
        nn.Module.__init__(self)
        self.grid, self.chans, self.hidden = grid, cell_channels(z_dim, grid), hidden
        self.drop = nn.Dropout(dropout)
        self.net = nn.Sequential(nn.Conv2d(self.chans + hidden + 1, width, 3, 1, 1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, 1, 1), nn.SiLU(),
                                 nn.Conv2d(width, self.chans, 3, 1, 1))

    def forward(self, x: torch.Tensor, s: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        b, g = len(x), self.grid
        maps = [x.view(b, self.chans, g, g), s.view(b, 1, 1, 1).expand(b, 1, g, g),
                self.drop(h).view(b, self.hidden, g, g)]
        return self.net(torch.cat(maps, 1)).flatten(1)


def make_rnn(cfg) -> MDNRNN:
    """The RNN a WorldModelConfig asks for, fresh (rnn_type)."""
    if cfg.rnn_type == "convlstm":
        return ConvMDNRNN(cfg.z_dim, cfg.latent_grid, cfg.rnn_hidden, cfg.mixtures, cfg.sigma_min, cfg.rnn_dropout)
    return MDNRNN(cfg.z_dim, cfg.rnn_hidden, cfg.mixtures, cfg.rnn_type, cfg.sigma_min, cfg.rnn_dropout)


def make_flow_head(cfg) -> FlowHead:
    """The flow head (dream_head 'flow') that reads make_rnn(cfg)'s features, fresh; on the
    map its convs have flow_width / 8 channels (256 would cost ~100x the MLP per draw)."""
    if cfg.rnn_type == "convlstm":
        return ConvFlowHead(cfg.z_dim, cfg.latent_grid, cfg.rnn_hidden, max(cfg.flow_width // 8, 1), cfg.rnn_dropout)
    return FlowHead(cfg.z_dim, cfg.rnn_hidden, cfg.flow_width, cfg.rnn_dropout)
