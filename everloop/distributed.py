"""Training on many processes: `torchrun --nproc_per_node N [--nnodes M ...] -m everloop train ...`
(and `everloop paint train-renderer | train-agent`) with torch.distributed (docs/distributed.md).

torchrun starts one process per device and tells each its place in the environment
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `session` joins them: gloo on the
CPU, NCCL on CUDA (each process on cuda:LOCAL_RANK). Without torchrun (WORLD_SIZE unset or
1) nothing here does anything, and every helper returns what world size 1 always did, so a
single process trains bit for bit as it did before.

What stays the same whatever the world size (docs/distributed.md says why each holds):
- the configured batch is the global batch: each process trains on its share
  (`share_batch`), draws its own data and noise from the run's seed and its rank
  (`rank_generator`, `seed_noise`), and rank 0's draws are world size 1's;
- gradients are averaged over the processes before any optimizer steps
  (grad_average.py): every network, and each player of a GAN, separately;
- terms of a loss that look at the whole batch (moments, spreads, BatchNorm statistics)
  see every process's rows (global_batch.py);
- decisions made from a clock or a signal (stop, save, --minutes) are taken together
  (`agree`), so every process runs the same steps and calls the same collectives;
- only rank 0 reads and writes the run folder; the others get what it read (`from_main`).

A process that dies or stops answering makes the others' next collective fail within
EVERLOOP_DIST_TIMEOUT seconds (default 600); `session` turns that into a one-line error."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import json
import os
import re
import sys
import warnings

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import EverloopError

TIMEOUT_ENV = "EVERLOOP_DIST_TIMEOUT"
"""Seconds a collective (and the first meeting of the processes) waits for the others."""
DEFAULT_TIMEOUT = 600.0  # rank 0 may write a checkpoint or a sample sheet while the others wait


@dataclasses.dataclass
class _Place:
    rank: int = 0
    """This process's index among all processes of the run (0 writes the run folder)."""
    world: int = 1
    """How many processes train the run together."""
    local_rank: int = 0
    """Its index on its own machine: the GPU it uses."""


_place = _Place()


def world() -> int:
    return _place.world


def rank() -> int:
    return _place.rank


def is_main() -> bool:
    """Whether this process writes the run folder, the log, the sheets and the bar."""
    return _place.rank == 0


def active() -> bool:
    """Whether more than one process trains this run (in a `session`)."""
    return _place.world > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun), also outside a session."""
    return int(os.environ.get("RANK", "0"))


def timeout_seconds() -> float:
    try:
        seconds = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        raise EverloopError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: give seconds, e.g. 600") from None
    if not seconds > 0:
        raise EverloopError(f"{TIMEOUT_ENV}={seconds}: give a number of seconds > 0")
    return seconds


@contextlib.contextmanager
def session(device: torch.device, where: str = "the run"):
    """Join the other processes of a torchrun launch (WORLD_SIZE > 1) for the block; yields
    the device this process trains on (a CUDA device becomes cuda:LOCAL_RANK). A process
    group the caller already started is used as it is and left running. A failed collective
    (a process died, or stopped answering for the timeout) is a one-line EverloopError."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 and not dist.is_initialized():
        yield device
        return
    started = not dist.is_initialized()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)  # NCCL and the object collectives use the current device
    if started:
        try:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_seconds()))
        except (RuntimeError, ValueError) as e:
            raise EverloopError(f"rank {launched_rank()}: could not meet the run's other processes "
                                f"({_first_line(e)}); check MASTER_ADDR / MASTER_PORT and that every "
                                f"node was started") from None
    _place.rank, _place.world, _place.local_rank = dist.get_rank(), dist.get_world_size(), local
    finished = False
    try:
        yield device
        if started:  # leave together: no process tears its connections down under another's feet
            gc.collect()  # nothing left that holds a collective's tensors (an old autograd graph)
            dist.barrier()
        finished = True
    except dist.DistError as e:
        raise _lost(e, where) from None
    except RuntimeError as e:
        if not _is_collective_error(e):
            raise
        raise _lost(e, where) from None
    finally:
        _place.rank, _place.world, _place.local_rank = 0, 1, 0
        from . import grad_average
        grad_average.forget()
        # After a failure NCCL's teardown can wait on the process that failed (torchtitan
        # destroys only after success); gloo's returns, and leaves nothing running at exit.
        if started and (finished or dist.get_backend() == "gloo"):
            dist.destroy_process_group()


def exit_now(code: int | None) -> None:
    """End a process of a multi-process launch without the interpreter's teardown. After the
    process group is destroyed a gloo thread can still be joinable when C++ statics die, and
    the process aborts ("terminate called without an active exception", exit -6) though its
    work is saved and every rank agreed: seen in 2 of ~20 two-process test runs. Every write
    is finished by now (atomic renames), so flush and leave at once."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


def _first_line(e: BaseException) -> str:
    """The gist of a collective's error: its first sentence, without gloo's source location."""
    text = str(e).strip().splitlines()
    line = re.sub(r"^\[[^\]]*\]\s*", "", text[0]) if text else type(e).__name__
    return line.split(". ")[0][:300]


def _is_collective_error(e: RuntimeError) -> bool:
    text = str(e).lower()
    return any(k in text for k in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket"))


def _lost(e: BaseException, where: str) -> EverloopError:
    return EverloopError(f"rank {_place.rank} of {_place.world}: another process of this run died or stopped "
                         f"answering ({_first_line(e)}); the last checkpoint in {where}, if any, stands "
                         f"(continue with --resume)")


# ---- the run folder: rank 0 reads it, every process gets what it read -------------------------

def from_main(fn):
    """fn() on rank 0, its result (any picklable value) on every process; an EverloopError it
    raises is raised on every process, so they all stop on it together."""
    if not active():
        return fn()
    box = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except EverloopError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise EverloopError(value)
    return value


def broadcast_module(module: nn.Module) -> None:
    """Every parameter and saved buffer (the state_dict) as rank 0 has it: the same start on
    every process, even where two machines' kernels would draw a seeded init a bit
    differently. Buffers left out of the state_dict are each process's own (duralava's
    carried latents: its rows of the batch)."""
    if not active():
        return
    with torch.no_grad():
        for t in module.state_dict(keep_vars=True).values():
            dist.broadcast(t.data, src=0)


def all_objects(obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process (small things: RNG states)."""
    if not active():
        return [obj]
    out = [None] * world()
    dist.all_gather_object(out, obj)
    return out


# ---- data and noise ---------------------------------------------------------------------------

def rank_generator(seed: int, step: int | None = None) -> np.random.Generator:
    """This process's stream of data draws. Rank 0's is default_rng(seed), world size 1's;
    rank r's is seeded by (seed, r), and by the step too when a resume gives a rank a stream
    for the first time (so it does not replay one a run already drew)."""
    return _stream(seed, step)


def _stream(seed: int, step: int | None) -> np.random.Generator:
    if _place.rank == 0 and step is None:
        return np.random.default_rng(seed)
    key = (_place.rank,) if step is None else (_place.rank, step)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def seed_noise(seed: int, step: int | None = None) -> None:
    """Seed this process's torch RNG (training noise) apart from the others'; rank 0 keeps
    its stream (world size 1's). Call after the model is built: every process builds the
    same initial weights from the seed."""
    if _place.rank == 0 and step is None:
        return
    torch.manual_seed(int(_stream(seed, step).integers(2 ** 63)))


def rng_state(rng: np.random.Generator, device: torch.device) -> dict:
    """The RNG state of this process, as train_state.pt keeps rank 0's."""
    state = {"numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
    if device.type == "cuda":  # training noise is drawn on the device (devices.randn)
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(rng: np.random.Generator, state: dict, device: torch.device) -> None:
    rng.bit_generator.state = json.loads(state["numpy_rng"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def other_rng_states(rng: np.random.Generator, device: torch.device) -> dict:
    """{"rank_rngs": [rank 1's state, rank 2's, ...]} for train_state.pt (rank 0's is kept
    where it always was); {} at world size 1, so its train_state.pt is as before."""
    if not active():
        return {}
    return {"rank_rngs": all_objects(rng_state(rng, device))[1:]}


def resume_rngs(rng: np.random.Generator, state: dict, seed: int, device: torch.device) -> None:
    """Restore this process's RNG state from a checkpoint saved at any world size: rank 0
    and every rank the checkpoint had take their own; a rank it did not have starts a fresh
    stream of (seed, rank, step)."""
    if _place.rank == 0:
        set_rng_state(rng, state, device)
        return
    saved = state.get("rank_rngs", [])
    if _place.rank <= len(saved):
        set_rng_state(rng, saved[_place.rank - 1], device)
        return
    fresh = _stream(seed, state["step"])
    rng.bit_generator.state = fresh.bit_generator.state
    seed_noise(seed, state["step"])


def share_batch(cfg, fields):
    """The config a process trains with: each of `fields` (counts per step of the global
    batch) divided by the world size; a count that does not divide is a one-line error."""
    if not active():
        return cfg
    for name in fields:
        value = getattr(cfg, name)
        if value % world():
            raise EverloopError(f"{name} {value}: the batch is split over the {world()} processes; "
                                f"give a multiple of {world()}")
    return dataclasses.replace(cfg, **{name: getattr(cfg, name) // world() for name in fields})


def gather(x: torch.Tensor) -> torch.Tensor:
    """[b, ...] of every process, concatenated in rank order; differentiable (torch.distributed.
    nn's all_gather: the gradient of each process's rows is summed over every process's loss)."""
    if x.requires_grad:
        import torch.distributed.nn.functional as dist_nn
        with warnings.catch_warnings():  # deprecated for torch.compile's collectives; eager is fine
            warnings.simplefilter("ignore", FutureWarning)
            return torch.cat(dist_nn.all_gather(x))
    flag = x.dtype == torch.bool  # gloo has no bool
    x = x.to(torch.uint8) if flag else x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world())]
    dist.all_gather(parts, x)
    out = torch.cat(parts)
    return out.bool() if flag else out


def gather_batch_state(extra: dict, keys) -> dict:
    """extra_state with the per-clip rows of `keys` of every process, in rank order (what a
    checkpoint keeps: the global batch's rows, whatever the world size)."""
    if not active():
        return extra
    return {k: (gather(v) if k in keys and torch.is_tensor(v) else v) for k, v in extra.items()}


def split_batch_state(extra: dict, keys) -> dict:
    """The rows of `keys` that are this process's share (the inverse of gather_batch_state);
    rows that do not split evenly are left whole, and the family starts them afresh."""
    if not active():
        return extra
    out = dict(extra)
    for k in keys:
        v = extra.get(k)
        if torch.is_tensor(v) and v.dim() and len(v) % world() == 0:
            out[k] = v.chunk(world())[rank()].clone()
    return out


def mean_logs(logs: dict) -> dict:
    """A step's logs averaged over the processes (the global batch's, for means; a NaN on
    one process is a NaN on all, so they all stop on it)."""
    if not active() or not logs:
        return logs
    keys = sorted(logs)
    values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(values)
    values = (values / world()).tolist()
    return {k: values[keys.index(k)] for k in logs}


def agree(stop: bool, seconds: float, save_due: bool) -> tuple[bool, float, bool]:
    """(any process was asked to stop, rank 0's seconds, rank 0's clock says save): what a
    training loop decides by clocks and signals, the same on every process."""
    if not active():
        return stop, seconds, save_due
    mine = [float(stop), seconds if is_main() else 0.0, float(save_due) if is_main() else 0.0]
    t = torch.tensor(mine, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    got = t.tolist()
    return got[0] > 0, got[1], got[2] > 0


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
