"""How likely a worldmodel run finds its held-out footage at each sampling temperature: the
MDN-RNN's next-latent NLL on the held-out tail of every episode (context from the frames
before it), teacher-forced, for a grid of tau. A run that learnt its clip by heart is
over-confident there, and its likelihood peaks above tau = 1.

    .venv/bin/python bench/dream_temperature.py RUN --data DATA [--taus 0.5,1,2,4]"""
from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file

from everloop.checkpoint import load_run
from everloop.data import FrameStore
from everloop.models.mdn import nll_by_temperature
from everloop.models.worldmodel import LATENTS_FILE
from everloop.models.worldmodel_fit import heldout_sequences

TAUS = "0.5,0.71,1,1.41,2,2.83,4,5.66,8"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--taus", default=TAUS)
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_run(a.run)
    # the RNN stage's own set-up: the held-out split and the latents the encode stage saved
    model.begin_stage("rnn", FrameStore(a.data), {LATENTS_FILE: load_file(f"{a.run}/{LATENTS_FILE}")})
    taus = [float(t) for t in a.taus.split(",")]
    seqs = heldout_sequences(model)
    nll = nll_by_temperature(model.mdn, seqs, taus)
    print(f"{a.run}: {sum(int(s.sum()) for _, s in seqs)} held-out steps; "
          + "  ".join(f"tau {t:g}: {v:.3f}" for t, v in zip(taus, nll)))


if __name__ == "__main__":
    main()
