"""One process of the torch.distributed tests (tests/test_distributed.py starts 1 or 2 of
them, with torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).

    python tests/dist_worker.py equivalence OUT DATA DIGITS  # every family, global draws
    python tests/dist_worker.py die|hang DATA RUN     # rank 1 dies / stops answering at step 3
    python tests/dist_worker.py cli ARGS...           # everloop's CLI, as torchrun would start it

`equivalence`: each rank draws the *global* batch's data and noise (the same stream on
every rank) and keeps its own rows, so world size 2 sees exactly the data and noise that
world size 1 sees; then K steps at either size must give the same weights. Each rank
writes the final weights of every network it trained to OUT/<name>.rank<R>.pt."""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from everloop import distributed, train
from everloop.cli import main
from everloop.painter import agent, renderer

torch.set_num_threads(1)

RANK, WORLD = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))

FAMILIES = {  # name: (steps, --set overrides, blocks of the global batch)
    "duralava": (4, {}, 1),
    # free bits clamp the global batch's KL mean (gather_rows); dropout draws its masks
    # inside torch's kernel, per process, as under any DDP run: off, so the ranks can match
    "worldmodel": (6, {"rnn_dropout": 0.0}, 1),
    "multiscale": (4, {}, 2),  # D's clips, then G's
    "playable": (4, {}, 1),  # clips with their actions (NOOP: the test data has none)
}


def _mine(rows, blocks: int = 1):
    """This rank's rows of a global batch (a tensor, or ActionClips) of `blocks` equal blocks."""
    size = len(rows) // blocks
    share = size // WORLD
    return rows[torch.cat([torch.arange(k * size + RANK * share, k * size + (RANK + 1) * share)
                           for k in range(blocks)])]


class RowsGenerator:
    """A numpy Generator that draws, for n rows, this rank's rows of n x world rows drawn
    from one stream that every rank shares (world size 1 draws the same rows whole)."""

    def __init__(self, seed: int, step=None):
        self.g = np.random.default_rng(seed)

    @property
    def bit_generator(self):
        return self.g.bit_generator

    def integers(self, low, high=None, size=None):
        size = (size,) if isinstance(size, int) else tuple(size)
        full = self.g.integers(low, high, size=(size[0] * WORLD, *size[1:]))
        return full[RANK * size[0]:(RANK + 1) * size[0]]


def _global_noise(fn, gen: torch.Generator):
    """torch.randn / rand whose n rows are this rank's rows of n x world rows of `gen`."""
    def draw(*shape, generator=None, device=None, dtype=None, **kw):
        if generator is not None or kw:
            return fn(*shape, generator=generator, device=device, dtype=dtype, **kw)
        shape = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        full = fn(shape[0] * WORLD, *shape[1:], generator=gen, dtype=dtype)
        return full[RANK * shape[0]:(RANK + 1) * shape[0]].to(device)
    return draw


def patch_global_draws(recorded: list) -> None:
    gen = torch.Generator().manual_seed(1234)
    randn, rand = _global_noise(torch.randn, gen), _global_noise(torch.rand, gen)
    noise = {"randn": randn, "rand": rand,
             "randn_like": lambda x, **kw: randn(*x.shape, dtype=x.dtype, device=x.device),
             "rand_like": lambda x, **kw: rand(*x.shape, dtype=x.dtype, device=x.device)}
    distributed.rank_generator = RowsGenerator
    broadcast = distributed.broadcast_module

    def record(module):  # every network a trainer starts, in order
        recorded.append(module)
        broadcast(module)
    distributed.broadcast_module = record

    from everloop.models import FAMILIES as REGISTRY
    for name, (_, _, n_blocks) in FAMILIES.items():
        cls = REGISTRY[name][2]

        def sample_batch(self, store, rng, _orig=cls.sample_batch, _blocks=n_blocks):
            mine = self.cfg  # the global batch's draw, with the config of the global batch
            self.cfg = dataclasses.replace(mine, **{f: getattr(mine, f) * WORLD for f in self.batch_fields()})
            try:
                return _mine(_orig(self, store, rng.g), _blocks)
            finally:
                self.cfg = mine

        def train_step(self, batch, opt, autocast=False, _orig=cls.train_step):
            saved = {k: getattr(torch, k) for k in noise}
            for k, f in noise.items():
                setattr(torch, k, f)
            try:
                return _orig(self, batch, opt, autocast)
            finally:
                for k, f in saved.items():
                    setattr(torch, k, f)
        cls.sample_batch, cls.train_step = sample_batch, train_step

    real_batch = renderer.real_batch

    def global_strokes(env, rng, n):
        if not isinstance(rng, RowsGenerator):  # the held-out strokes
            return real_batch(env, rng, n)
        a, layers = real_batch(env, rng.g, n * WORLD)
        return _mine(a), _mine(layers)
    renderer.real_batch = global_strokes


def equivalence(out: Path, data: str, digits: str) -> None:
    if WORLD > 1:  # one process group for every training below (each would start its own)
        torch.distributed.init_process_group("gloo")
    recorded: list = []
    patch_global_draws(recorded)
    for name, (steps, sets, _) in FAMILIES.items():
        del recorded[:]
        train.train(train.TrainArgs(data=data, out=str(out / f"{name}.w{WORLD}"), family=name, preset="tiny",
                                    overrides=sets, steps=steps, sample_every=0, progress=False, precision="fp32"))
        torch.save([m.state_dict() for m in recorded], out / f"{name}.w{WORLD}.rank{RANK}.pt")
    del recorded[:]
    rcfg = renderer.RendererConfig(size=16, width=8, hidden=64, batch=16, val_strokes=32)
    renderer.train_renderer(out / f"renderer.w{WORLD}", rcfg, steps=4, progress=False)
    torch.save([m.state_dict() for m in recorded], out / f"renderer.w{WORLD}.rank{RANK}.pt")
    del recorded[:]
    acfg = agent.AgentConfig(strokes=3, width=8, hidden=32, batch=4, refresh_every=0)
    agent.train_agent(out / f"renderer.w{WORLD}", digits, out / f"agent.w{WORLD}", acfg, steps=4, progress=False)
    torch.save([m.state_dict() for m in recorded], out / f"agent.w{WORLD}.rank{RANK}.pt")


def failing(kind: str, data: str, run: str) -> int:
    """Train through the CLI; rank 1 dies (os._exit) or hangs at its 3rd step."""
    from everloop.models import FAMILIES as REGISTRY
    cls = REGISTRY["duralava"][2]
    orig, count = cls.train_step, [0]

    def train_step(self, batch, opt, autocast=False):
        count[0] += 1
        if RANK == 1 and count[0] == 3:
            if kind == "die":
                os._exit(3)
            time.sleep(600)
        return orig(self, batch, opt, autocast)
    cls.train_step = train_step
    return main(["train", "--data", data, "--out", run, "--family", "duralava", "--preset", "tiny",
                 "--steps", "50", "--quiet", "--sample-every", "0"])


if __name__ == "__main__":
    from everloop.distributed import exit_now  # as `python -m everloop` under torchrun
    job = sys.argv[1]
    if job == "cli":
        exit_now(main(sys.argv[2:]))
    if job == "equivalence":
        equivalence(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
        exit_now(0)
    exit_now(failing(job, sys.argv[2], sys.argv[3]))
