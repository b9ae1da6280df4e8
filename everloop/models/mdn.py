"""The MDN-RNN of World Models: a GRU or LSTM over latents whose head is a mixture of K
diagonal Gaussians for the next latent, one mixture per latent dimension.

Per-dimension mixture weights (as in World Models, not one weight vector shared by all
dims): a latent's dimensions can then branch independently, which K = 5 shared components
could not express for a 32-d latent, and the likelihood is a sum over dims, cheap and stable.

Everything is in log space. The PyTorch port of World Models computed the density and then
its log, and saw the loss run off to -1e22 once a sigma collapsed; here the log-density is
log_softmax(logits) + log N, summed with logsumexp, and log sigma has a soft floor."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import devices
from ..errors import EverloopError

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def floor_log_sigma(raw: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """log sigma >= log(sigma_min), smoothly: a hard clamp would stop the gradient of a
    component whose sigma sits on the floor, and it could never widen again."""
    lo = math.log(sigma_min)
    return lo + F.softplus(raw - lo)


def mixture_log_prob(logits: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor,
                     x: torch.Tensor) -> torch.Tensor:
    """log p(x) per dimension: params [..., K], x [...] -> [...]."""
    z = (x.unsqueeze(-1) - mu) * torch.exp(-log_sigma)
    log_normal = -0.5 * z * z - log_sigma - _LOG_SQRT_2PI
    return torch.logsumexp(F.log_softmax(logits, dim=-1) + log_normal, dim=-1)


def mixture_nll(logits, mu, log_sigma, x) -> torch.Tensor:
    """Mean negative log-likelihood per latent dimension (nats)."""
    return -mixture_log_prob(logits.float(), mu.float(), log_sigma.float(), x.float()).mean()


def tempered(logits: torch.Tensor, log_sigma: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The mixture that mixture_sample draws from at temperature tau > 0: logits / tau, and
    sigma * sqrt(tau); for scoring a temperature by likelihood."""
    return logits.float() / tau, log_sigma.float() + 0.5 * math.log(tau)


def mixture_sample(logits: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, tau: float = 1.0,
                   generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per dimension at temperature tau: pi = softmax(logits / tau), std = sigma *
    sqrt(tau) (variance sigma^2 * tau; NN-Dreams used sigma * tau as a variance, a bug).

    One uniform and one normal of a fixed shape per call, so a stream is the same however
    it is chunked, and tau = 0 would be the mode of the most likely component. With a
    (CPU) `generator` they are drawn on the CPU and moved to mu's device (devices.randn).
    `noise` [..., 2] (mu's shape with 2 for K) gives both draws as standard normals, the
    first made uniform by the normal CDF, when the caller makes them (a noise with memory,
    WorldModel.advance); then nothing is drawn here."""
    if tau < 0:
        raise EverloopError(f"temperature must be >= 0, got {tau}")
    shape = mu.shape[:-1]
    if noise is None:
        u = devices.rand(*shape, 1, generator=generator, device=mu.device)
        eps = devices.randn(*shape, generator=generator, device=mu.device)
    else:
        u, eps = torch.special.ndtr(noise[..., :1]), noise[..., 1]
    probs = F.softmax(logits.float() / max(tau, 1e-6), dim=-1)
    k = (probs.cumsum(-1) < u).sum(-1, keepdim=True).clamp_max(mu.shape[-1] - 1)  # inverse CDF
    m, ls = mu.gather(-1, k).squeeze(-1), log_sigma.gather(-1, k).squeeze(-1)
    return m + torch.exp(ls) * math.sqrt(tau) * eps


class MDNRNN(nn.Module):
    """z_t [B, T, L] -> mixture parameters of z_{t+1}, each [B, T, L, K], and the new hidden."""

    def __init__(self, z_dim: int, hidden: int, mixtures: int, kind: str = "lstm", sigma_min: float = 0.01,
                 dropout: float = 0.0):
        super().__init__()
        cells = {"lstm": nn.LSTM, "gru": nn.GRU}
        if kind not in cells:
            raise EverloopError(f"unknown rnn_type {kind!r} (use 'lstm', 'gru' or 'convlstm')")
        self._mixture_setup(z_dim, mixtures, sigma_min, dropout, feature_size=hidden)
        self.rnn = cells[kind](z_dim, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 3 * z_dim * mixtures)

    def _mixture_setup(self, z_dim: int, mixtures: int, sigma_min: float, dropout: float, feature_size: int) -> None:
        """What every RNN of this contract keeps (conv_dynamics.ConvMDNRNN too), checked."""
        if sigma_min <= 0:
            raise EverloopError(f"sigma_min must be > 0, got {sigma_min}")
        if not 0 <= dropout < 1:
            raise EverloopError(f"rnn_dropout must be in [0, 1), got {dropout}")
        self.z_dim, self.k, self.sigma_min = z_dim, mixtures, sigma_min
        self.feature_size = feature_size  # width of features(): what a head reads
        self.drop = nn.Dropout(dropout)  # training only (Zaremba et al.: on the non-recurrent path)

    def features(self, z: torch.Tensor, hidden=None):
        """The RNN's output [B, T, hidden] for each step (what the heads read), and the new hidden."""
        return self.rnn(self.drop(z), hidden)

    def forward(self, z: torch.Tensor, hidden=None):
        out, hidden = self.features(z, hidden)
        p = self.head(self.drop(out)).view(*out.shape[:-1], self.z_dim, 3 * self.k)
        logits, mu, raw = p.split(self.k, dim=-1)
        return (logits, mu, floor_log_sigma(raw, self.sigma_min)), hidden

    def self_fed(self, inp: torch.Tensor, noise, share: float):
        """forward() of inp [B, T, L] step by step, for training: at each step after the
        first, a `share` of the inputs is the model's own (detached) sample of that step,
        drawn from its previous output; `noise` (a tensor like inp, or 0) is added to every
        input. The mixture parameters of every step, as forward() returns them."""
        b, t, _ = inp.shape
        use_own = torch.rand(b, t, 1, device=inp.device) < share
        hidden, outs, prev = None, [], None
        for i in range(t):
            x = inp[:, i]
            if prev is not None:
                own = mixture_sample(*(p[:, 0].detach() for p in prev))
                x = torch.where(use_own[:, i], own, x)
            x = x + (noise[:, i] if torch.is_tensor(noise) else 0.0)
            prev, hidden = self(x[:, None], hidden)
            outs.append(prev)
        return tuple(torch.cat([o[j] for o in outs], 1) for j in range(3))


@torch.no_grad()
def nll_by_temperature(mdn: MDNRNN, sequences: list[tuple[torch.Tensor, torch.Tensor]],
                       taus: list[float]) -> list[float]:
    """Mean NLL per latent dim of the scored steps of teacher-forced sequences at each tau.
    sequences: (z [T, L], scored bool [T - 1]: which next-latent predictions count)."""
    kept = []
    for z, scored in sequences:
        (logits, mu, log_sigma), _ = mdn(z[None, :-1])
        kept.append((logits[0][scored], mu[0][scored], log_sigma[0][scored], z[1:][scored]))
    logits, mu, log_sigma, target = (torch.cat(t) for t in zip(*kept))
    nll = []
    for tau in taus:
        t_logits, t_log_sigma = tempered(logits, log_sigma, tau)
        nll.append(-mixture_log_prob(t_logits, mu.float(), t_log_sigma, target.float()).mean().item())
    return nll
