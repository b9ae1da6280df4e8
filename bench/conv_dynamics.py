"""Speed of the worldmodel's dynamics, flat (the default) against 'convlstm' on a latent map,
in one process: one RNN training step (forward + backward of the mixture NLL on a batch of
rnn_batch windows of seq_len + 1 latents, no self-feeding) and one dream draw (an RNN step
and the flow head's Euler steps, 8 streams). Ratios within one run are what to compare.

    python bench/conv_dynamics.py [--threads 1] [--repeat 5]
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from everloop.models.conv_dynamics import make_flow_head, make_rnn
from everloop.models.mdn import mixture_nll
from everloop.models.worldmodel_config import WorldModelConfig

VARIANTS = {
    "flat LSTM, z 32 (default)": {},
    "flat LSTM, 8 x 8 map z 256": {"latent_grid": 8, "z_dim": 256},
    "convlstm, 8 x 8 map z 256, 16 ch": {"latent_grid": 8, "z_dim": 256, "rnn_type": "convlstm", "rnn_hidden": 16},
    "convlstm, 16 ch, 1 Gaussian a latent": {"latent_grid": 8, "z_dim": 256, "rnn_type": "convlstm", "rnn_hidden": 16,
                                             "mixtures": 1},
}


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def measure(cfg: WorldModelConfig, repeat: int) -> tuple[float, float]:
    """Seconds per RNN training step, seconds per dream step of 8 streams."""
    rnn, head = make_rnn(cfg), make_flow_head(cfg)
    opt = torch.optim.Adam(rnn.parameters())
    z = torch.randn(cfg.rnn_batch, cfg.seq_len + 1, cfg.z_dim)

    def train_step():
        params, _ = rnn(z[:, :-1])
        loss = mixture_nll(*params, z[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def draw():
        out, _ = rnn.features(z[:8, :1])
        head.sample(out[:, 0], torch.randn(8, cfg.z_dim), cfg.flow_steps)

    return timed(train_step, repeat), timed(draw, repeat * 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = [(name, *measure(dataclasses.replace(WorldModelConfig(), **changes), a.repeat))
            for name, changes in VARIANTS.items()]
    base_train, base_draw = rows[0][1], rows[0][2]
    print(f"threads {a.threads}; torch {torch.__version__}")
    print("| dynamics | RNN training step (s) | x default | dream step, 8 streams (ms) | x default |")
    print("|---|---:|---:|---:|---:|")
    for name, train_s, draw_s in rows:
        print(f"| {name} | {train_s:.3f} | {train_s / base_train:.1f} | {draw_s * 1e3:.1f} | {draw_s / base_draw:.1f} |")


if __name__ == "__main__":
    main()
