"""duralava's options and presets (the family itself is duralava.py): every change from the
seed system is a field here, so the seed stays one preset away (`--preset seed`)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DuralavaConfig:
    size: int = 64
    """Frame height = width in pixels; a power of two >= 8 (G doubles a 4x4 map up to it,
    D halves it back down)."""
    latent_dim: int = 64
    """Size of the N(0, I) latent that holds the whole state of the scene."""
    g_width: int = 32
    """Channels of G's last hidden layer; doubles per layer towards the latent (seed: 256-128-64-32)."""
    step_hidden: int = 512
    """Hidden width of the latent step MLP (seed: 64 -> 512 -> 512 -> 64)."""
    step_residual: bool = True
    """z_{t+1} = z_t + MLP(z_t) instead of the seed's z_{t+1} = MLP(z_t)."""
    step_noise_dim: int = 16
    """Fresh N(0, 1) inputs to the step MLP each step (0 = deterministic, the seed)."""
    latent_noise: float = 0.1
    """Std of N(0, 1) noise added to the step's raw output before renormalising (0 = seed)."""
    d_width: int = 16
    """Channels of D's first conv layer; doubles per layer (seed: 32)."""
    d_feat: int = 128
    """Per-frame feature size and recurrent state size of D."""
    d_diff: bool = True
    """D's frame encoder also sees x_t - x_{t-1} (motion), not only x_t (seed: False)."""
    d_batch_std: bool = True
    """D also gets the batch's feature spread per step (ProGAN's minibatch std): a batch of
    streams that all show one scene is then easy to call fake (seed: False)."""
    spectral_norm: bool = True
    """Spectral norm on D's conv and linear layers (seed: BatchNorm in D)."""
    loss: str = "hinge"
    """GAN loss: 'hinge' or 'bce' (the seed's non-saturating BCE with logits)."""
    moment_weight: float = 0.1
    """Weight of the normality penalty mean^2 + (std-1)^2 + skew^2 + (kurt-3)^2 (seed: 0.1)."""
    dim_weight: float = 1.0
    """Weight of each latent dim's mean^2 + (std-1)^2 over all streams and steps of a batch.
    Without it the learned step contracts every stream towards one point (measured: per-dim
    std 0.28 across 64 streams), so all streams show the same scene (0 = seed)."""
    motion_weight: float = 1.0
    """Weight of the log mean-frame-difference match at `motion_lags` (0 = seed)."""
    motion_lags: tuple[int, ...] = (1, 2, 4, 8, 11)
    """Lags, in model steps, at which fake motion must match real motion."""
    spread_weight: float = 1.0
    """Weight of the log match of how different two streams are at one step to how
    different two real clips (random moments) are: against G ignoring its latent, the
    mode collapse that makes every stream show one scene (0 = seed)."""
    batch_size: int = 16
    """Clips per training step (seed: 32; 16 gives twice the updates per minute on a CPU)."""
    clip_length: int = 12
    """Frames per training clip = latent steps unrolled per training step (seed: 20)."""
    clip_stride: int = 6
    """Real frames between two model steps (seed: 6, i.e. 5 steps per second of 30 fps video)."""
    carry_prob: float = 0.9
    """Chance that a sample's last latent starts its next clip, else redrawn (seed: 0.5).
    At 0.9 a latent lives 10 clips on average, so G and R train on the model's own long
    rollouts, where drift happens, not mostly on fresh draws from the prior."""
    optimizer: str = "adam"
    """'adam' or 'sgd' (the seed's plain SGD)."""
    lr_g: float = 4e-4
    """Learning rate of G and the latent step (seed: 1e-3 with SGD)."""
    lr_d: float = 2e-4
    """Learning rate of D (seed: 1e-3 with SGD)."""
    burn_in: int = 16
    """Model steps a stream runs before its first frame is shown: a fresh draw from the
    prior is rarely where long rollouts live, so the very first frames would look off."""
    ema_decay: float = 0.995
    """EMA of G and the step used for sampling; 0 samples the raw weights (seed)."""


# Named sets of overrides; "default" is the dataclass itself, so defaults live in one place.
PRESETS: dict[str, dict] = {
    "default": {},
    # The published system, for comparisons: deterministic MLP step, pooled moments,
    # BCE, BatchNorm-free D without spectral norm, SGD, no motion loss, no EMA.
    "seed": {"batch_size": 32, "clip_length": 20, "step_residual": False, "step_noise_dim": 0,
                 "latent_noise": 0.0, "d_width": 32, "d_diff": False, "d_batch_std": False,
                 "spectral_norm": False, "loss": "bce", "dim_weight": 0.0, "motion_weight": 0.0,
                 "spread_weight": 0.0, "carry_prob": 0.5, "optimizer": "sgd", "lr_g": 1e-3, "lr_d": 1e-3,
                 "ema_decay": 0.0, "burn_in": 0},
    # The demo: small batches of short clips, so a few minutes on a laptop give many updates.
    "demo": {"batch_size": 8, "clip_length": 8, "motion_lags": (1, 2, 4, 7), "ema_decay": 0.99},
    # Tests: 16x16 frames, width 8.
    "tiny": {"size": 16, "latent_dim": 16, "g_width": 8, "step_hidden": 32, "step_noise_dim": 4,
                 "d_width": 8, "d_feat": 16, "batch_size": 4, "clip_length": 6, "clip_stride": 1,
                 "motion_lags": (1, 2), "ema_decay": 0.9},
}
