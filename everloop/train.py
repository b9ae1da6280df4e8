"""Training a family: batch -> model.train_step -> log / sample / save, on the step loop
every trainer shares (loop.py: budget, progress bar, checkpoint cadence, stops that save).

Read top to bottom: set-up (new run or resume), the loop, and the checkpoint it leaves.
A run stops after --steps or --minutes, or on Ctrl-C or SIGTERM (stopping.py: the step
in flight finishes, then it saves); each way it saves first, so `--resume` continues where
it left off (same data order, same RNG streams). It also saves every --save-every minutes,
so a SIGKILL or a power cut loses at most that much. A resume first rewinds log.jsonl and
samples/ to the checkpoint's step: every step is logged once, and no sheet shows a step
that was rolled back. --resume keeps the run's family, preset, config and seed (a
contradicting --family / --preset / --set / --seed is an error); the budget, sampling,
saving, precision, device and data path may change.

A family may train in stages (worldmodel: vae, encode, rnn, flow): it lists them with their
shares of the budget in `model.stages()` (a stage of fixed length names its steps in
`model.stage_steps()`), and the loop runs them in order, calling
`model.begin_stage` / `end_stage` around each and saving between them. The stage and the
step each stage began at are saved with the run, so --resume continues inside the right
stage and --stage NAME redoes one (and those after it). A family of one stage (the
default of models.base.Family) runs the plain loop, without stage hooks.

--device cuda trains on a GPU: the model is moved there after it is built or loaded (the
optimizers are made or loaded after the move, so their state follows), and every batch is
moved as it is drawn; the data order and the checkpoints stay on the CPU (checkpoint.py).
--resume is bit-exact on the CPU. On a GPU it restores the CUDA RNG too, but GPU kernels
need not be deterministic, so a resumed GPU run is the same run only up to float noise.

Under torchrun (`torchrun --nproc_per_node N -m everloop train ...`) every process runs
this file together with the others (distributed.py): the configured batch is the global
one, each process trains on its share with its own data and noise, gradients are averaged
before each optimizer steps, and rank 0 alone reads and writes the run folder; the others
get what it read. A checkpoint keeps every process's RNG state and batch rows, so a run
resumes at any world size. docs/distributed.md has the details."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import (
    checkpoint,
    devices,
    distributed,
    global_batch,
    grad_average,
    outputs,
    sheets,
)
from .data import FrameStore, seed_clips
from .errors import EverloopError
from .flags import flag
from .loop import TrainLoop
from .models import FAMILIES, family_for, make_config
from .run_guard import check_args, check_resume, lock_run, rewind
from .validate import SEED, check_values, number, positive


@dataclass
class TrainArgs:
    """What `everloop train` takes: its flags are made from these fields (flags.py), so each
    default and each --help line is written here once."""
    data: str = flag(metavar="DATA")
    """Dataset folder written by `everloop prepare` (frames.npy + meta.json)."""
    out: str = flag(metavar="RUN")
    """Run folder to write: config.json, model.safetensors, train_state.pt, samples/, log.jsonl."""
    family: str | None = None
    """Model family: worldmodel, duralava or multiscale (everloop.models.FAMILIES). Not given:
    the preset's family if it names one (--preset seed alone: duralava), else
    models.DEFAULT_FAMILY (worldmodel); on --resume, the run's."""
    preset: str = "default"
    """Named config of the family (default, demo, tiny; seed for duralava); on --resume, the run's."""
    overrides: dict = flag(default_factory=dict, flag="--set", action="append", metavar="KEY=VALUE")
    """Override one config field (repeatable; the fields and their docstrings are in
    everloop/models/<family>.py)."""
    steps: int | None = flag(None, type=positive("--steps"))
    """Stop after this many training steps in total (counting resumed ones)."""
    minutes: float | None = flag(None, type=positive("--minutes", float, hi=1e7))
    """Stop after this many minutes of training in this invocation."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint. --family, --preset, --set and --seed
    must agree with the run (a contradiction is an error); --steps, --minutes, --sample-every,
    --save-every, --precision, --device, --threads and --data may change."""
    stage: str | None = flag(None, metavar="NAME")
    """Redo this training stage of the run in --out (and every stage after it) from the step it
    began at."""
    force: bool = False
    """Start over, replacing the run in --out (only a run: never a dataset or another folder)."""
    seed: int = flag(0, type=SEED)
    """Seeds weights, data order and noise: the same seed gives the same run."""
    sample_every: int = flag(250, type=number("--sample-every", int, lo=0), metavar="STEPS")
    """A sample sheet in samples/ every STEPS steps (0: only at the end)."""
    save_every_minutes: float = flag(5.0, flag="--save-every", metavar="MINUTES",
                                     type=positive("--save-every", float, hi=1e7))
    """Checkpoint at least this often: what a SIGKILL or a power cut can lose; Ctrl-C and
    SIGTERM save before they stop."""
    precision: str = flag("auto", choices=["auto", "fp32", "bf16"])
    """bf16 = autocast on the device; auto = on the CPU bf16 where bench/ measured it faster
    (bf16 instructions), on a GPU fp32 (no family's bf16 quality has been measured yet)."""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto (cuda if torch sees one, else cpu)."""
    progress: bool = flag(True, invert="--quiet")
    """No progress bar."""
    given: tuple = flag((), cli=False)
    """Names of the fields above the user gave (the CLI fills it): on --resume, a given
    family, preset or seed must match the run's, as must one that differs from its default."""


def use_bf16(precision: str, device: torch.device | None = None) -> bool:
    # Measured in bench/ (see BENCHMARKS.md): on a CPU with AVX-512 BF16 the duralava step
    # runs faster under bf16 autocast; elsewhere bf16 is emulated and slower. A GPU runs
    # bf16 fast, but whether a family still trains as well in it is unmeasured: fp32 there.
    if precision == "auto" and device is not None and device.type != "cpu":
        return False
    if precision == "auto":
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        return "avx512_bf16" in flags or "amx_bf16" in flags
    if precision not in ("fp32", "bf16"):
        raise EverloopError(f"--precision {precision!r}: use fp32, bf16 or auto")
    return precision == "bf16"


def _build_new(args: TrainArgs, store: FrameStore | None = None):
    """The model of a new run from family, preset and --set, every value checked first.
    A family that draws whole frames takes its `size` from square data unless --set gives
    one: `prepare --size 128` is then all a user types for 128x128."""
    cls, _, module = FAMILIES.get(args.family, (None, None, None))
    given = set(args.overrides)  # what the user set; a size taken from the data is named as the data
    if (store is not None and cls is not None and "size" not in args.overrides and store.height == store.width
            and "size" in {f.name for f in dataclasses.fields(cls)} and not module.trains_on_crops):
        args = dataclasses.replace(args, overrides={**args.overrides, "size": store.height})
    cfg = make_config(args.family, args.preset, args.overrides)
    check_values(type(cfg), {k: getattr(cfg, k) for k in given}, "--set", from_set=given)
    config = {"family": args.family, "config": checkpoint.config_to_dict(cfg)}
    try:
        return checkpoint.model_from_config(config, "--set")
    except EverloopError as e:
        if "size" in given or store is None:
            raise
        raise EverloopError(f"{args.data}: frames are {store.height}x{store.width}; "
                            f"{str(e).removeprefix('--set: ')}") from None


def _setup(args: TrainArgs, store: FrameStore, device: torch.device):
    out = Path(args.out)
    if args.resume or args.stage is not None:
        built = []  # rank 0's model, built while it checked the run

        def read():
            cfg_json = checkpoint.read_config(out)
            built.append(checkpoint.model_from_config(cfg_json, out / checkpoint.CONFIG))
            check_resume(args, cfg_json, built[0])
            state = checkpoint.load_train_state(out)  # on the CPU
            return cfg_json, state, checkpoint.resume_weights(out, state)
        cfg_json, state, weights = distributed.from_main(read)
        model = built[0] if built else checkpoint.model_from_config(cfg_json, out / checkpoint.CONFIG)
        try:
            model.load_state_dict(weights)
        except (KeyError, RuntimeError) as e:
            raise EverloopError(f"{out / checkpoint.TRAIN_STATE}: does not match {out / checkpoint.CONFIG} "
                                f"({type(e).__name__})") from None
        model.to(device)
        global_batch.sync_batchnorm(model, device)  # before the optimizers take the parameters
        # a family moves its extra state to its device; each process takes its rows of the batch
        model.load_extra_state(distributed.split_batch_state(state["extra"], model.batch_state))
        opt = model.configure_optimizers()  # Optimizer.load_state_dict moves the state to the weights
        for name, o in opt.items():
            o.load_state_dict(state["optim"][name])
        return model, opt, state
    distributed.from_main(lambda: _claim_new(args, out))
    torch.manual_seed(args.seed)  # seeds the CUDA RNG too; every process builds the same weights
    model = _build_new(args, store).to(device)
    global_batch.sync_batchnorm(model, device)
    return model, model.configure_optimizers(), None


def _claim_new(args: TrainArgs, out: Path) -> None:
    if outputs.kind_of(out) == "run" and not args.force:
        raise EverloopError(f"{out} already holds a run; pass --resume to continue it or --force to start over")
    # --force replaces only a run (outputs.claim), never a dataset, the --data, or a folder
    # everloop did not make.
    outputs.claim(out, "run", force=args.force, inputs={"--data": args.data})




def _first_stage(args: TrainArgs, model, opt, state, names, device: torch.device):
    """(index of the stage to run first, whether it starts fresh, stage_starts, step, opt)."""
    step = state["step"] if state else 0
    starts = dict(state.get("stage_starts", {})) if state else {}
    at = names.index(state["stage"]) if state and state.get("stage") in names else 0
    if state and state.get("stage_done") and at + 1 < len(names):
        at, fresh = at + 1, True  # saved between two stages: the next begins
    else:
        fresh = state is None
    if args.stage is not None:
        if len(names) < 2:
            raise EverloopError(f"--stage: the {model.family} family trains in one stage; use --force to start over")
        if args.stage not in names:
            raise EverloopError(f"--stage {args.stage!r}: {model.family} has stages {', '.join(names)}")
        if args.stage not in starts:
            raise EverloopError(f"--stage {args.stage}: {args.out} never reached it; continue with --resume")
        at, fresh, step = names.index(args.stage), True, starts[args.stage]
        for name in names[at:]:
            model.reset_stage(name)
        model.to(device)  # the fresh modules are built on the CPU
        opt = model.configure_optimizers()
    return at, fresh, starts, step, opt


def train(args: TrainArgs) -> Path:
    check_args(args)
    if not (args.resume or args.stage is not None):
        args = dataclasses.replace(args, family=family_for(args.family, args.preset))
    if not (args.resume or args.stage is not None) and args.family not in FAMILIES:
        raise EverloopError(f"--family {args.family!r}: unknown (known: {', '.join(FAMILIES)})")
    store = FrameStore(args.data)
    device = devices.resolve(args.device)
    out = Path(args.out)
    main = distributed.launched_rank() == 0  # the one process that writes the run folder
    made_out = main and not out.exists()  # removed again if the run fails before its first save
    try:
        with distributed.session(device, str(out)) as device:
            model, opt, state = _setup(args, store, device)
            locks = []  # one writer per run folder, until this call returns
            distributed.from_main(lambda: locks.append(_lock(out)))
            try:
                return _train(args, store, device, model, opt, state)
            finally:
                for fd in locks:
                    os.close(fd)
    except BaseException as e:
        if made_out and not isinstance(e, KeyboardInterrupt) and not (out / checkpoint.CONFIG).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _lock(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    return lock_run(out)


def _train(args: TrainArgs, store: FrameStore, device: torch.device, model, opt, state) -> Path:
    size = model.frame_size
    if size is not None and (store.height, store.width) != (size, size):
        raise EverloopError(f"{args.data}: frames are {store.height}x{store.width} but the model wants "
                            f"{size}x{size}; prepare with --size {size} or --set size=...")
    out, main = Path(args.out), distributed.is_main()
    if state is None and main:  # a fresh start: nothing of an older run may linger in the folder
        for old in [out / "log.jsonl", out / checkpoint.TRAIN_STATE, out / checkpoint.PREVIOUS,
                    *(out / "samples").glob("step_*.png")]:
            old.unlink(missing_ok=True)
    if main:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    bf16 = use_bf16(args.precision, device)
    rng = distributed.rank_generator(args.seed)  # rank 0's is world size 1's
    elapsed_before = 0.0
    if state is not None:
        elapsed_before = state["elapsed"]
        distributed.resume_rngs(rng, state, args.seed, device)
    else:
        distributed.seed_noise(args.seed)  # after every process built the same weights
    stages = model.stages()
    names, shares = [n for n, _ in stages], [max(float(s), 0.0) for _, s in stages]
    multi = len(stages) > 1  # log lines name their stage
    first, fresh_first, stage_starts, step, opt = _first_stage(args, model, opt, state, names, device)
    current, stage_done = names[first], False
    global_batch.sync_batchnorm(model, device)  # for modules --stage made afresh
    distributed.broadcast_module(model)  # every process starts from rank 0's weights
    grad_average.average_gradients(model.parameters(), opt)
    global_cfg, model.cfg = model.cfg, distributed.share_batch(model.cfg, model.batch_fields())
    if args.stage is not None and main:
        rewind(out, step, redo=tuple(names[first:]))
    elif state is not None and main:
        rewind(out, step, state.get("log_bytes"))
    run_train = distributed.from_main(lambda: (checkpoint.read_config(out).get("train") or {})
                                      if state is not None else {})
    meta = {"data": {"path": str(args.data), **{k: store.meta.get(k) for k in ("height", "width", "fps", "source")}},
            "train": {"preset": run_train.get("preset", args.preset), "seed": run_train.get("seed", args.seed),
                      "precision": "bf16" if bf16 else "fp32"}}
    if run_train.get("precision") not in (None, meta["train"]["precision"]) and main:  # may change on resume
        print(f"resume: precision {meta['train']['precision']} (the run used {run_train['precision']})")

    def save() -> None:
        model.prepare_sampling()  # on every process: the weights stay the same everywhere
        extra = distributed.gather_batch_state(model.extra_state(), model.batch_state)
        ts = {"extra": extra,  # save_run adds the training-only weights
              "optim": {k: o.state_dict() for k, o in opt.items()}, "step": loop.step,
              "stage": current, "stage_done": stage_done, "stage_starts": stage_starts,
              "elapsed": elapsed_before + loop.seconds(), "log_bytes": flushed_log(),
              "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state()}
        if device.type == "cuda":  # training noise is drawn on the device (devices.randn)
            ts["cuda_rng"] = torch.cuda.get_rng_state(device)
        ts.update(distributed.other_rng_states(rng, device))  # ranks 1, 2, ...: resume at any world size
        if main:
            checkpoint.save_run(out, model, {**meta, "step": loop.step}, ts, cfg=global_cfg)

    # Next-frame families continue real clips in their sample sheets: the same 4 every time.
    sheet_clip = None
    if model.requires_seed_clip and main:
        sheet_clip = seed_clips(store, model.context_frames, model.clip_spec()[2], 4, args.seed)

    def sample(prepared: bool = False) -> None:
        if not prepared:  # save() has just done it at the end of a run
            model.prepare_sampling()
        model.eval()
        path = out / "samples" / f"step_{loop.step:07d}.png"
        if sheet_clip is not None:
            sheets.stream_sheet(model, path, streams=4, steps=(0, 1, 2, 4, 8, 16), seed_clip=sheet_clip)
        else:
            sheets.stream_sheet(model, path)
        model.train()

    log = (out / "log.jsonl" if main else Path(os.devnull)).open("a")  # only rank 0 logs

    def flushed_log() -> int:
        """Bytes of log.jsonl that belong to the checkpoint being saved (rewind cuts there)."""
        if not log.closed:
            log.flush()
        return (out / "log.jsonl").stat().st_size if main else 0

    def stage_event(event: str, info: dict | None) -> None:
        if info:
            log.write(json.dumps({"stage": current, "event": event, **info, "step": loop.step}) + "\n")
            if args.progress and main:
                loop.bar.write(f"{current} {event}: " + ", ".join(f"{k} {v:.3f}" for k, v in info.items()))

    def train_step(progress: float) -> dict:
        try:  # a family may draw its own batches (crops, latents, ...); the default is clips
            logs = model.train_step(model.sample_batch(store, rng).to(device, non_blocking=True), opt, autocast=bf16)
            return distributed.mean_logs(logs)  # the global batch's, the same on every process
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "memory" not in str(e).lower():
                raise
            raise EverloopError(f"out of memory at step {loop.step + 1} ({type(e).__name__}); the last "
                                f"checkpoint in {out} is kept (try a smaller --set batch_size)") from None

    def logged(logs: dict) -> None:
        logs.update(step=loop.step, time=round(elapsed_before + loop.seconds(), 2))
        log.write(json.dumps({**logs, "stage": current} if multi else logs) + "\n")
        log.flush()  # on disk before a sheet of this step can be: a kill never orphans a sheet
        if args.sample_every and loop.step % args.sample_every == 0 and main:
            sample()

    def share(lo: int, hi: int) -> float:
        return sum(shares[lo:hi]) / max(sum(shares[lo:]), 1e-12)

    model.train()
    budget, total = None if args.minutes is None else args.minutes * 60, args.steps
    try:
        with TrainLoop(step=step, steps=total, minutes=args.minutes, save=save, where=out, progress=args.progress,
                       desc=f"train {model.family}", save_every_minutes=args.save_every_minutes) as loop:
            for i in range(first, len(names)):
                if loop.stopping:
                    stage_done = i > first  # stopped between two stages: the next begins on resume
                    break
                last, current, stage_done = i == len(names) - 1, names[i], False
                # --steps counts over the whole run; --minutes over this call's remaining stages.
                end = total if last or total is None else round(total * share(0, i + 1))
                limit = budget if last or budget is None else budget * share(first, i + 1)
                if multi:
                    if i > first or fresh_first:
                        stage_starts[current] = loop.step
                    loop.bar.set_description(f"train {model.family} {current}")
                    loop.worked = True
                    saved = distributed.from_main(lambda: checkpoint.read_artifacts(out, model.artifact_files))
                    stage_event("begin", model.begin_stage(current, store, saved, i > first or fresh_first))
                    made = model.take_artifacts()  # models do no file I/O
                    if main:
                        checkpoint.write_artifacts(out, made)
                else:  # one stage: its begin hook still runs (playable fits its palette there)
                    stage_event("begin", model.begin_stage(current, store, {}, fresh_first))
                fixed = model.stage_steps(current)
                fixed_end = None if fixed is None else stage_starts.get(current, loop.step) + fixed
                # its own length, from where it began (on resume too); a last stage resumed past
                # it trains on under --steps / --minutes as any last stage (a run made longer)
                if fixed_end is not None and not (last and loop.step >= fixed_end):
                    end, limit = fixed_end, math.inf
                if last or shares[i] > 0 or fixed is not None:
                    loop.run(train_step, end, limit, on_step=logged)
                if loop.stopping:  # the stage is not over: a resume continues inside it
                    break
                if multi:
                    stage_event("end", model.end_stage(current, store))
                    if not last:
                        stage_done = True
                        loop.save()
                        stage_done = False
            loop.finish()
    finally:
        log.close()
    if main:
        sample(prepared=True)
    return out
