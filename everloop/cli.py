"""everloop prepare | record | train | generate | live | serve | sheet | eval | paint | play

Every user-facing failure is an EverloopError, printed as one line with exit status 2.
Every number is checked here as it is parsed (validate.py: finite, in range, the flag
named); every output goes through outputs.claim (replaced only with --force, and only by
the same kind of thing everloop made; never an input of the command)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Set before torch is imported: with another busy process, spinning OpenMP threads make a
# 2-core machine 10-50x slower; passive waiting costs nothing when the machine is quiet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import EverloopError
from .validate import SEED, number
from .validate import positive as _positive

MAX_FPS, MIN_FPS = 1000.0, 0.01  # what a video container can carry (rates are kept to 1/1001)
FPS = number("--fps", float, lo=MIN_FPS, hi=MAX_FPS)
MAX_SHEET_FRAMES = 1024  # frames on one sheet (all held in memory, one image)


def _crop(text: str):
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop must be X,Y,W,H in pixels, got {text!r}") from None
    return x, y, w, h


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise EverloopError(f"--set {pair!r}: use key=value")
        k, v = pair.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _claim(a, kind: str, inputs: dict, flag: str = "--out"):
    from .outputs import claim
    return claim(getattr(a, flag[2:].replace("-", "_")), kind, force=getattr(a, "force", False), flag=flag,
                 inputs=inputs)


def cmd_prepare(a) -> None:
    from .prepare import prepare
    meta = prepare(a.source, a.out, size=a.size, crop=a.crop, force=a.force, fps=a.fps, max_still=a.max_still)
    print(f"wrote {a.out}: {meta['frames']} frames of {meta['height']}x{meta['width']} "
          f"at {meta['fps']} fps in {len(meta['episodes'])} episode(s)"
          + (f"; dropped {meta['stalls']['dropped_frames']} frames of recorder stalls" if "stalls" in meta else ""))


def cmd_train(a) -> None:
    import json

    import torch

    from .flags import given
    from .train import TrainArgs, train
    if a.threads:
        torch.set_num_threads(a.threads)
    # Flags not given keep TrainArgs' defaults (the one place they live) or, on --resume, the run's.
    opts = given(a, TrainArgs)
    opts["overrides"] = {**_overrides(opts.get("overrides")), **({"adversarial": False} if a.no_adversarial else {})}
    run = train(TrainArgs(**opts, given=tuple(k for k in opts if k != "overrides")))
    from .distributed import launched_rank
    if launched_rank() != 0:  # under torchrun: one line per run, from the process that wrote it
        return
    from .models import FAMILIES
    family = FAMILIES[json.loads((Path(run) / "config.json").read_text())["family"]][2]
    seed = f" --seed-clip {a.data}" if family.requires_seed_clip else ""  # it continues real frames
    print(f"saved {run}; try: everloop generate {run}{seed} --frames 900 --out {Path(run).name}.mp4")


def _load(a):
    import torch

    from .checkpoint import load_run
    from .devices import resolve
    if getattr(a, "threads", None):
        torch.set_num_threads(a.threads)
    return load_run(a.run, resolve(getattr(a, "device", "cpu")))


def _interp(a, model) -> int:
    # Default: play at the speed of the source video (one model step = clip_stride frames).
    return a.interp if a.interp else model.clip_stride


def _sampling(a, model, config):
    """Apply --temperature to the model; the --seed-clip frames as float [1, T, C, H, W] or None."""
    from .rollout import set_temperature
    set_temperature(model, getattr(a, "temperature", None))
    if getattr(a, "seed_clip", None) is None:
        if model.requires_seed_clip:  # checked before any output is opened
            raise EverloopError(f"the {model.family} family continues real frames: give --seed-clip DATA "
                                f"({model.context_frames} frames of a prepared dataset)")
        return None
    import numpy as np

    from .data import FrameStore, to_float
    need = model.context_frames
    if not need:
        raise EverloopError(f"--seed-clip: the {model.family} family cannot start from a seed clip")
    store = FrameStore(a.seed_clip)
    # The frames the run was trained on (a fully convolutional family trains on crops of them).
    data = config.get("data") or {}
    size = model.frame_size
    want = (data["height"], data["width"]) if data.get("height") else (size, size)
    if want[0] is not None and (store.height, store.width) != tuple(want):
        raise EverloopError(f"--seed-clip {a.seed_clip}: frames are {store.height}x{store.width}, "
                            f"the run's are {want[0]}x{want[1]}")
    stride = model.clip_stride  # one model step apart, as in training
    idx = a.seed_start + stride * np.arange(need)
    if a.seed_start < 0 or idx[-1] >= len(store):
        raise EverloopError(f"--seed-clip {a.seed_clip}: {need} frames {stride} apart from --seed-start "
                            f"{a.seed_start} need frames up to {idx[-1]}, the data has {len(store)}")
    return to_float(store.frames[idx])[None]


def cmd_generate(a) -> None:
    from tqdm import tqdm

    from . import rollout
    from .sinks import open_sink, output_kind
    inputs = {"RUN": a.run, "--seed-clip": a.seed_clip}
    _claim(a, output_kind(a.out), inputs)  # before the model loads: a refused --out costs nothing
    model, config = _load(a)
    seed_clip = _sampling(a, model, config)
    fps = a.fps or (config.get("data") or {}).get("fps") or 30  # config.json's fps is checked on load
    # The stream does not depend on the chunk; more latents than frames would only cost memory.
    with open_sink(a.out, fps=min(max(fps, MIN_FPS), MAX_FPS), frames=a.frames, force=a.force, inputs=inputs) as sink, \
            tqdm(total=a.frames, unit="frame", desc="generate", disable=a.quiet) as bar:
        for chunk in rollout.frames(model, a.frames, batch=1, seed=a.seed, interp=_interp(a, model),
                                    chunk=min(a.chunk, a.frames), seed_clip=seed_clip):
            sink.write(chunk[0])
            bar.update(chunk.shape[1])
    print(f"wrote {a.out}: {a.frames} frames at {fps} fps")


def cmd_live(a) -> None:
    from . import live, rollout
    if a.web is not None:  # the browser: `everloop serve`'s server with this one run (serve.py)
        from .serve import cmd_live_web
        return cmd_live_web(a)
    live.check_display()
    model, config = _load(a)
    seed_clip = _sampling(a, model, config)
    chunks = (c[0] for c in rollout.frames(model, None, seed=a.seed, interp=_interp(a, model), chunk=a.fps,
                                           seed_clip=seed_clip))
    shown = live.play(chunks, fps=a.fps, scale=a.scale)
    print(f"played {shown} frames")


def cmd_sheet(a) -> None:
    from . import sheets
    if Path(a.out).suffix.lower() != ".png":
        raise EverloopError(f"--out {a.out}: a sheet is a PNG image; give a name ending in .png")
    if a.count * a.streams > MAX_SHEET_FRAMES:  # every frame of a sheet is held at once
        raise EverloopError(f"--count {a.count} x --streams {a.streams} = {a.count * a.streams} frames; "
                            f"a sheet holds at most {MAX_SHEET_FRAMES} (use generate for long stretches)")
    _claim(a, "image", {"RUN": a.run})
    model, config = _load(a)
    _sampling(a, model, config)
    sheets.window_sheet(model, a.out, start=a.start, count=a.count, stride=a.stride, streams=a.streams,
                        seed=a.seed, interp=a.interp or 1)
    print(f"wrote {a.out}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other everloop error
        print(f"everloop: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def cmd_eval(a) -> None:
    import dataclasses
    import shutil

    import torch

    from .evaluate import EvalArgs, evaluate
    from .flags import given
    from .outputs import swap_into_place, temp_path
    from .report import failures
    if a.threads:
        torch.set_num_threads(a.threads)
    args = EvalArgs(**given(a, EvalArgs))  # flags not given keep EvalArgs' defaults
    out = _claim(args, "report", {"RUN": args.run, "--data": args.data, "--video": args.video})
    tmp = temp_path(out)  # the report is written whole beside --out, then renamed into place
    try:
        options = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("run", "data", "frames", "out", "force")}
        rep = evaluate(args.run, args.data, args.frames, str(tmp), **options)
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    last = str(rep["horizons"][-1])
    worst = max(rep["drift"], key=lambda m: rep["drift"][m][last])
    flags = failures(rep)  # every flag the report.md lists (twins were missing here)
    print(f"wrote {args.out}/report.json: {rep['frames']} frames x {rep['streams']} stream(s); at t={last} "
          f"worst drift {worst} {rep['drift'][worst][last]:.2f}x the real band; "
          f"failures: {', '.join(flags) if flags else 'none'}")


def _add_device(s) -> None:
    # Checked when the command runs (devices.resolve), so a missing GPU is a one-line error.
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (cuda if there is one)")


def add_eval_parser(subparsers) -> None:
    """`everloop eval RUN --data DATA --frames N --out REPORT [...]`: see docs/eval.md."""
    s = subparsers.add_parser("eval", help="drift of a run's streams vs the real data at t = 16 ... 100k")
    from .evaluate import EvalArgs
    from .flags import add_flags
    add_flags(s, EvalArgs)
    s.add_argument("--threads", type=_positive("--threads", hi=1024))
    s.set_defaults(func=cmd_eval)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="everloop", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("prepare", help="video / frame folder / episode tree -> DATA (frames.npy + meta.json)")
    s.add_argument("source")
    s.add_argument("--out", required=True, help="dataset folder to write")
    s.add_argument("--size", type=_positive("--size", hi=4096), help="square output size (at most 4096); "
                   "native size if omitted")
    s.add_argument("--crop", type=_crop, help="X,Y,W,H crop in source pixels (default: none; with --size, the centre square)")
    s.add_argument("--fps", type=FPS, help="frame rate of a frame folder (default 30)")
    s.add_argument("--max-still", type=number("--max-still", float, lo=0, hi=1e6), metavar="SECONDS",
                   help="a longer run of identical frames is a recorder stall: drop the repeats past "
                        "SECONDS and cut the episode there; 0 keeps every frame (default: 1 for a video "
                        "or a frame folder, 0 for an episode tree, whose game may pause)")
    s.add_argument("--force", action="store_true", help="replace an existing DATA folder (only a dataset)")
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("train", help="train a family on DATA into a run folder")
    from .flags import add_flags
    from .train import TrainArgs
    add_flags(s, TrainArgs)
    s.add_argument("--no-adversarial", action="store_true",
                   help="multiscale: train the plain Lp + GDL baseline (same as --set adversarial=false)")
    s.add_argument("--threads", type=_positive("--threads", hi=1024))
    s.set_defaults(func=cmd_train)

    for name, helptext in (("generate", "write an endless stream's first N frames to a file"),
                           ("live", "play the endless stream in a window"),
                           ("sheet", "a PNG grid of frames start, start+stride, ... of several streams")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("run")
        s.add_argument("--seed", type=SEED, default=0)
        s.add_argument("--interp", type=_positive("--interp", hi=1000),
                       help="frames per model step (default: the run's clip stride, real speed)")
        s.add_argument("--threads", type=_positive("--threads", hi=1024))
        _add_device(s)
        s.add_argument("--temperature", type=_positive("--temperature", float, hi=100),
                       help="sampling temperature of families that have one (worldmodel; default 1)")
        if name != "sheet":
            s.add_argument("--seed-clip", metavar="DATA",
                           help="start from real frames of a prepared dataset (worldmodel)")
            s.add_argument("--seed-start", type=number("--seed-start", int, lo=0), default=0,
                           help="first frame of the --seed-clip")
        s.set_defaults(func={"generate": cmd_generate, "live": cmd_live, "sheet": cmd_sheet}[name])
        if name == "generate":
            s.add_argument("--frames", type=_positive("--frames"), required=True)
            s.add_argument("--out", required=True, help=".mp4, .png (APNG), .gif or a folder/ of PNGs")
            s.add_argument("--fps", type=FPS, help="frame rate (default: the data's)")
            s.add_argument("--chunk", type=_positive("--chunk", hi=65536), default=512,
                           help="frames per decoder call (at most --frames)")
            s.add_argument("--force", action="store_true",
                           help="replace an existing output of the same kind (a video, a frame folder)")
            s.add_argument("--quiet", action="store_true")
        elif name == "live":
            s.add_argument("--fps", type=_positive("--fps", hi=int(MAX_FPS)), default=30)
            s.add_argument("--scale", type=_positive("--scale", hi=64), default=6)
            s.add_argument("--web", type=number("--web", int, lo=1, hi=65535), metavar="PORT",
                           help="serve the stream to a browser on 127.0.0.1:PORT instead of a window")
        else:
            s.add_argument("--out", required=True, help="the .png to write")
            s.add_argument("--force", action="store_true", help="replace an existing sheet image")
            s.add_argument("--start", type=number("--start", int, lo=0, hi=10 ** 9), default=0)
            s.add_argument("--count", type=_positive("--count", hi=MAX_SHEET_FRAMES), default=16)
            s.add_argument("--stride", type=_positive("--stride", hi=10 ** 6), default=1)
            s.add_argument("--streams", type=_positive("--streams", hi=MAX_SHEET_FRAMES), default=4)
    from .painter.cli import add_paint_parser
    from .play import add_play_parser
    from .serve import add_serve_parser
    from .sources.atari import add_record_parser
    for add in (add_eval_parser, add_record_parser, add_paint_parser, add_serve_parser, add_play_parser):
        add(sub)  # commands whose code lives with what they run
    return p


def _terminated(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so every writer drops its temp on the way out (train
    # replaces this with its own handler while it trains: it saves first, stopping.py).
    from .stopping import Stopped
    raise Stopped(signum, "terminated")


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    args = parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        args.func(args)
    except EverloopError as e:
        print(f"everloop: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permission denied, a path that vanished: one line naming it
        where = f"{e.filename}: " if e.filename else ""
        print(f"everloop: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C 130, SIGTERM 143 (train saves first: stopping.py)
        return 128 + getattr(e, "signum", 2)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
