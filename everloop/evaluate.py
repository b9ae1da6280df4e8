"""`everloop eval`: how far a stream drifts from the real footage, at t = 16 ... 100,000.

Generated windows (W = 64 consecutive frames at each horizon t, or the last W frames when
t + W > frames) are compared with the real frames of DATA, taken at the run's model stride
and split into two disjoint halves A and B (earlier / later windows of W frames).  Each
drift metric (see ``everloop.drift``) is reported as a ratio: d(generated set, A) divided by
the real-vs-real band, the mean of d(k windows drawn from B, A) over 16 seeded draws, with k
the number of generated windows (streams) per horizon, so both sides have the same sample
size.  A ratio near 1: as different from A as real footage is from itself.

Failure detectors run on 16x16 area-downsampled frames, thresholds calibrated on the real
frames at the same stride ("a second" = round(fps / stride) model steps):

* frozen  -- mean |x_t - x_{t-1}| <= max(real 1st percentile, 0.01 grey levels) for more than
  a second (the real footage's own longest still run is reported, not used: a recording
  that holds still is a camera artifact, a stream that stops is the failure);
* flicker -- mean |x_t - x_{t-1}| >= the real 99th percentile, for a run longer than a second
  and than twice the real footage's own longest such run (the lamp's motion is not
  stationary: a later stretch of the same recording runs ~2x longer above the earlier
  stretch's 99th percentile, and must not be flagged);
* loop    -- RMS distance to the nearest frame 2..300 steps back < min(0.5, 0.5 x real 1st
  percentile) x the lag-1 RMS difference, while consecutive frames still differ (not frozen),
  for a run longer than two seconds and than twice the real longest: a k-cycle, k >= 2,
  scores ~0 for as long as it lasts, while a stream that jitters back and forth for a few
  steps after a fast change (seen once in 100k steps of a 30-minute duralava run) is not a
  loop;
* collapse -- (>= 2 streams) at some horizon the streams' mean pairwise RMS distance is below
  the 1st percentile of the RMS distance between two random real frames;
* twins -- (>= 2 streams) at some horizon the two closest streams are that close: two
  seeds fell onto one trajectory (the rest may still differ, so collapse does not see it);
* saturation -- a horizon window's fraction of channel values at 0 or 255 exceeds the real
  99th percentile + 0.1;
* nan -- a latent or a decoded value is not finite (model runs only).

A model stream is stepped at every frame for all streams; frames are decoded everywhere for
the first ``full_streams`` streams and only inside the horizon windows for the others
(decoding is the cost: 100k frames x 4 streams would take ~4x longer).  Memory holds the
windows, a 300-frame history per stream and one chunk, however many frames are asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import drift, report
from .errors import EverloopError
from .flags import flag
from .reference import LOOP_SPAN, WINDOW, Reference
from .validate import SEED, positive

CHUNK = 256


class Evaluator:
    """Streams in frames (per stream, contiguous segments) and latents; keeps the windows."""

    def __init__(self, ref: Reference, frames: int, streams: int, horizons=drift.HORIZONS):
        w = ref.window
        if frames < w:
            raise EverloopError(f"--frames {frames} is shorter than the {w}-frame window")
        self.ref, self.frames, self.streams = ref, frames, streams
        self.horizons = [t for t in horizons if t <= frames] or [0]
        self.starts = {t: min(t, frames - w) for t in self.horizons}
        self.win = {t: np.zeros((streams, w, *ref.shape), np.uint8) for t in self.horizons}
        self.lat: dict[int, np.ndarray] = {}
        self.tracks = [drift.Track(LOOP_SPAN) for _ in range(streams)]
        self.runs = {k: [drift.Runs(n) for _ in range(streams)] for k, n in ref.min_run.items()}
        self.nan_at: int | None = None
        self.notes: list[str] = []

    def needed(self, lo: int, hi: int) -> np.ndarray:
        """bool [hi - lo]: which frames lo..hi-1 fall in some horizon window."""
        idx = np.arange(lo, hi)
        return np.any([(idx >= s) & (idx < s + self.ref.window) for s in self.starts.values()], 0)

    def feed(self, stream: int, start: int, frames: np.ndarray) -> None:
        n, w, ref = len(frames), self.ref.window, self.ref
        if tuple(frames.shape[1:]) != ref.shape:
            raise EverloopError(f"generated frames are {list(frames.shape[1:])}, the real data's {list(ref.shape)}")
        for t, s0 in self.starts.items():
            lo, hi = max(start, s0), min(start + n, s0 + w)
            if lo < hi:
                self.win[t][stream, lo - s0:hi - s0] = frames[lo - start:hi - start]
        mad, rms, rev = self.tracks[stream].feed(start, drift.downsample(frames))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = rev / rms
        self.runs["frozen"][stream].feed(start, mad <= ref.frozen_thr)
        self.runs["flicker"][stream].feed(start, mad >= ref.flicker_thr)
        self.runs["loop"][stream].feed(start, ref._loop_flags(mad, ratio))

    def feed_latents(self, start: int, lat: np.ndarray) -> None:
        """Latents [streams, n, L] of frames start..start+n-1 (every frame, all streams)."""
        if self.nan_at is None and not np.isfinite(lat).all():
            self.nan_at = start + int(np.argmin(np.isfinite(lat).all((0, 2))))
        n, w = lat.shape[1], self.ref.window
        for t, s0 in self.starts.items():
            lo, hi = max(start, s0), min(start + n, s0 + w)
            if lo < hi:
                buf = self.lat.setdefault(t, np.zeros((self.streams, w, lat.shape[2]), np.float32))
                buf[:, lo - s0:hi - s0] = lat[:, lo - start:hi - start]

    def mark_nan(self, at: int) -> None:
        self.nan_at = at if self.nan_at is None else min(self.nan_at, at)

    def report(self, seed: int = 0) -> dict:
        ref, k = self.ref, self.streams
        band = ref.band(k, seed)
        drift_r = {m: {} for m in ref.metrics}
        dist = {m: {} for m in ref.metrics}
        sat, spread, closest, latent = {}, {}, {}, {}
        for t in self.horizons:
            gen = [drift.summarise(self.win[t][s]) for s in range(k)]
            for m in ref.metrics:
                dist[m][str(t)] = d = drift.set_distance(m, ref.A, gen)
                drift_r[m][str(t)] = d / max(band[m][0], 1e-12)
            sat[str(t)] = float(drift.saturation(self.win[t].reshape(-1, *ref.shape)).mean())
            if k > 1:
                ds = drift.downsample(self.win[t].reshape(-1, *ref.shape)).reshape(k, ref.window, -1)
                pairs = [np.sqrt(((ds[i] - ds[j]) ** 2).mean(1)) for i in range(k) for j in range(i + 1, k)]
                spread[str(t)] = float(np.mean(pairs))
                closest[str(t)] = float(np.min(np.mean(pairs, 1)))
            if t in self.lat:
                from .models.duralava import latent_moments
                latent[str(t)] = {n: float(v) for n, v in latent_moments(torch.from_numpy(self.lat[t])).items()}
        det = {name: {"threshold": thr, "min_run": ref.min_run[name], "real_longest_run": ref.real_longest[name],
                      "longest_run": max(r.longest for r in self.runs[name]),
                      "first_at": min((r.first for r in self.runs[name] if r.first is not None), default=None)}
               for name, thr in (("frozen", ref.frozen_thr), ("flicker", ref.flicker_thr), ("loop", ref.loop_thr))}
        rep = {"frames": self.frames, "streams": k, "window": ref.window, "horizons": self.horizons,
               "frozen": det["frozen"]["longest_run"] >= ref.min_run["frozen"],
               "flicker": det["flicker"]["longest_run"] >= ref.min_run["flicker"],
               "loop": det["loop"]["longest_run"] >= ref.min_run["loop"],
               "nan": self.nan_at is not None,
               "saturation": max(sat.values()) > ref.saturation_p99 + 0.1,
               "drift": drift_r, "distance": dist,
               "band": {m: {"mean": b[0], "std": b[1]} for m, b in band.items()},
               "latent": latent, "prediction": {}, "notes": list(self.notes)}
        if k > 1:
            rep["collapse"] = min(spread.values()) < ref.spread_thr
            rep["twins"] = min(closest.values()) < ref.spread_thr
        det.update(nan={"first_at": self.nan_at},
                   saturation={"fraction": sat, "real_p99": ref.saturation_p99},
                   collapse={"spread": spread, "closest_pair": closest, "threshold": ref.spread_thr}
                   if k > 1 else None,
                   real_frozen_fraction=ref.frozen_fraction)
        rep["detectors"] = det
        if ref.real_longest["frozen"] >= ref.min_run["frozen"]:
            rep["notes"].append(f"the real footage itself holds still for {ref.real_longest['frozen']} steps "
                                f"(frozen flags more than {ref.min_run['frozen'] - 1})")
        if "flow_hist" not in ref.metrics:
            rep["notes"].append("flow_hist skipped: OpenCV (cv2) is not installed")
        return rep


def _feed_array(ev: Evaluator, gen: np.ndarray, bar=None) -> None:
    for i in range(0, gen.shape[1], CHUNK):
        for s in range(gen.shape[0]):
            ev.feed(s, i, gen[s, i:i + CHUNK])
        if bar is not None:
            bar.update(min(CHUNK, gen.shape[1] - i))


def evaluate_frames(generated: np.ndarray, real, out: str | None = None, steps_per_second: float = 30.0,
                    window: int = WINDOW, seed: int = 0, horizons=drift.HORIZONS,
                    latents: np.ndarray | None = None, progress: bool = False) -> dict:
    """The same report for in-memory frames: `generated` uint8 [streams, T, H, W, 3] (or
    [T, H, W, 3]); `real` uint8 [N, H, W, 3] or a list of such episodes, already at the model
    stride; `steps_per_second` = fps / stride; optional `latents` [streams, T, L]."""
    gen = generated[None] if generated.ndim == 4 else generated
    episodes = [real] if isinstance(real, np.ndarray) and real.ndim == 4 else list(real)
    w = min(window, gen.shape[1])
    ref = Reference(episodes, steps_per_second, w, seed, progress=progress)
    ev = Evaluator(ref, gen.shape[1], gen.shape[0], horizons)
    if latents is not None:
        ev.feed_latents(0, np.asarray(latents, np.float32))
    _feed_array(ev, gen)
    rep = ev.report(seed)
    if out is not None:
        report.write_outputs(rep, ev, out)
    return rep


def _video_frames(path: str, limit: int):
    """Frames uint8 [H, W, 3] of a video file or a folder of images, in order, native size
    (the same readers as `everloop prepare`, so a bad file fails the same way)."""
    from itertools import islice

    from .data import Geometry
    from .sources import open_source
    return islice(open_source(Path(path), Geometry()).frames, limit)


@dataclass
class EvalArgs:
    """What `everloop eval` takes: its flags are made from these fields (flags.py), so each
    default and each --help line is written here once."""
    run: str | None = flag(None, positional=True)
    """Run folder (omit with --video)."""
    data: str = flag(None, required=True)
    """The real dataset folder."""
    frames: int = flag(None, type=positive("--frames"), required=True)
    """Model steps per stream."""
    out: str = flag(None, required=True)
    """Report folder to write."""
    force: bool = flag(False)
    """Replace an existing report folder (only a report)."""
    video: str | None = None
    """Evaluate this generated video (one stream) instead of a run."""
    streams: int = flag(4, type=positive("--streams", hi=1024))
    """Streams of the run, each stepped at every frame."""
    seed: int = flag(0, type=SEED)
    """Seeds the streams and the real-vs-real draws."""
    stride: int | None = flag(None, type=positive("--stride"))
    """Real-data frames per generated frame (not given: the run's clip stride; 1 for --video)."""
    full_streams: int = flag(1, type=positive("--full-streams"))
    """Streams decoded at every frame for the detectors (others: windows only)."""
    temperature: float | None = flag(None, type=positive("--temperature", float, hi=100))
    """Sampling temperature of families that have one."""
    pred_steps: int = flag(64, type=positive("--pred-steps"))
    """Next-frame families: recursion steps scored against the real continuation."""
    pred_clips: int = flag(8, type=positive("--pred-clips"))
    """Next-frame families: held-out seed clips to average over."""
    control_starts: int = flag(100, type=positive("--control-starts"))
    """Action-conditioned runs: held-out starts rolled out with the true and the shuffled
    actions (report.json `control`, docs/play.md)."""
    control_steps: int = flag(1000, type=positive("--control-steps"))
    """Action-conditioned runs: steps of random-key play before the maze is compared."""
    control_streams: int = flag(8, type=positive("--control-streams", hi=1024))
    """Action-conditioned runs: streams of random-key play."""
    device: str = "cpu"
    """cpu, cuda, cuda:N or auto (cuda if torch sees one, else cpu)."""
    progress: bool = flag(True, invert="--quiet")
    """No progress bar."""


def evaluate(run: str | None, data: str, frames: int, out: str, **options) -> dict:
    """Generate (or read) `frames` frames, compare with DATA, write OUT/report.json etc.
    The model runs on `device`; the metrics run on the CPU (numpy). `options`: the fields of
    EvalArgs, with their defaults there."""
    a = EvalArgs(run=run, data=data, frames=frames, out=out, **options)
    video, streams, seed, progress, stride = a.video, a.streams, a.seed, a.progress, a.stride
    full_streams, pred_steps, pred_clips = a.full_streams, a.pred_steps, a.pred_clips
    from .data import FrameStore, to_uint8
    from .devices import resolve
    device = resolve(a.device)  # fails in a line before any work
    store = FrameStore(data)
    model = None
    if video is None:
        if run is None:
            raise EverloopError("eval needs a RUN folder or --video FILE")
        from .checkpoint import load_run
        model, _ = load_run(run, device)
        stride = stride or model.clip_stride
        from .rollout import set_temperature
        set_temperature(model, a.temperature)
    else:
        stride, streams = stride or 1, 1
        got = sum(1 for _ in _video_frames(video, frames))
        if got < min(frames, WINDOW):
            raise EverloopError(f"{video}: only {got} frames; need at least {min(frames, WINDOW)}")
        frames = min(frames, got)
    if frames < 16:
        raise EverloopError(f"--frames must be >= 16, got {frames}")
    note = None
    if model is not None and model.context_frames > 0:  # before the long part
        from .prediction import steps_that_fit
        fit = steps_that_fit(store, model.context_frames, stride, pred_steps)
        if fit < pred_steps:
            note = (f"prediction scored over {fit} steps, not {pred_steps}: the held-out split's longest "
                    f"stretch holds no more at stride {stride}") if fit else \
                   "no prediction scores: the held-out split is shorter than the context"
            pred_steps = fit
    episodes = [store.frames[s:e:stride] for s, e in store.episodes]
    ref = Reference(episodes, store.fps / stride, min(WINDOW, frames), seed, progress=progress)
    ev = Evaluator(ref, frames, streams)
    if note:
        ev.notes.append(note)
    with tqdm(total=frames, unit="frame", desc="eval", disable=not progress, dynamic_ncols=True) as bar:
        if model is None:
            buf, at = [], 0
            for f in _video_frames(video, frames):
                if f.shape != ref.shape:
                    raise EverloopError(f"{video}: frames are {f.shape[1]}x{f.shape[0]}, DATA's are "
                                        f"{ref.shape[1]}x{ref.shape[0]} (WxH)")
                buf.append(f)
                if len(buf) == CHUNK:
                    ev.feed(0, at, np.stack(buf))
                    at, buf = at + CHUNK, []
                    bar.update(CHUNK)
            if buf:
                ev.feed(0, at, np.stack(buf))
                bar.update(len(buf))
        else:
            clip = None
            if model.context_frames > 0:  # streams continue real clips spread over the footage
                from .data import spread_clips
                clip = spread_clips(store, model.context_frames, stride, streams, seed)
                ev.notes.append(f"every stream continues {model.context_frames} real frames of DATA, the "
                                f"streams' starts spread evenly over it (seed {seed})")
            _generate(model, ev, frames, streams, seed, min(full_streams, streams), bar, to_uint8, clip)
    rep = ev.report(seed)
    rep.update(run=run, data=str(data), video=video, seed=seed, stride=stride, full_streams=full_streams,
               temperature=model.temperature if model is not None and model.has_temperature else None)
    if model is not None and model.context_frames > 0 and pred_steps > 0:
        from .prediction import evaluate_prediction
        rep.update(evaluate_prediction(model, store, stride, pred_steps, pred_clips, seed))
    if model is not None and model.n_actions > 0:  # a world model: does it obey the keys?
        if store.actions is None:
            rep["notes"].append(f"no control scores: {data} has no actions")
        else:
            from .control import evaluate_control
            rep["control"] = evaluate_control(model, store, a.control_starts, a.control_steps,
                                              a.control_streams, seed)
    report.write_outputs(rep, ev, out)
    return rep


@torch.inference_mode()
def _generate(model, ev: Evaluator, frames, streams, seed, full, bar, to_uint8, seed_clip=None) -> None:
    from . import rollout
    done, hold, shown = 0, rollout.still_hold(model), {}  # stream -> (last frame shown [1, H, W, 3], its step)
    for lat in rollout.latents(model, streams, seed, 1, CHUNK, seed_clip=seed_clip):
        lat = lat[:, :frames - done]
        n = lat.shape[1]
        if lat.ndim == 3:  # a latent family; a next-frame family's "latent" is the frame
            ev.feed_latents(done, lat.float().cpu().numpy())
        need = ev.needed(done, done + n)
        picks = [np.arange(n) if s < full else np.flatnonzero(need) for s in range(streams)]
        if sum(map(len, picks)):
            z = torch.cat([lat[s, torch.from_numpy(p)] for s, p in enumerate(picks)])
            x = torch.cat([model.decode(z[i:i + CHUNK]) for i in range(0, len(z), CHUNK)])
            bad = ~torch.isfinite(x).flatten(1).all(1)
            if bad.any():
                ev.mark_nan(done + int(np.concatenate(picks)[int(bad.nonzero()[0])]))
            u8, at = to_uint8(x), 0
            for s, p in enumerate(picks):
                for seg in np.split(np.arange(len(p)), np.flatnonzero(np.diff(p) != 1) + 1):
                    if len(seg):
                        t0, part = done + int(p[seg[0]]), u8[at + seg[0]:at + seg[-1] + 1]
                        # a stream's still pixels hold as in playback; a window of a sparse
                        # stream starts from its first frame (what it held before is not drawn)
                        last, step = shown.get(s, (None, None))
                        part, last = rollout.hold_still(part[None], last if step == t0 - 1 else None, hold)
                        shown[s] = (last, t0 + part.shape[1] - 1)
                        ev.feed(s, t0, part[0])
                at += len(p)
        done += n
        bar.update(n)
        if done >= frames:
            return
