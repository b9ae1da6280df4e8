"""The step loop every trainer runs (`everloop train`'s families, `everloop paint`'s renderer
and agent): a budget of --steps in total or --minutes in this call, the progress bar, a
checkpoint every --save-every minutes, non-finite losses as one-line errors, and the stops
that save (stopping.py): the first Ctrl-C or SIGTERM finishes the step in flight, saves and
raises Stopped; a second one, or a KeyboardInterrupt raised by code, leaves the last
checkpoint (or saves, where no handler could be installed).

    with TrainLoop(step=..., steps=..., minutes=..., save=save, where=out, desc=...) as loop:
        loop.run(step_fn)            # once, or once per stage with its own end / limit
        loop.finish()                # saves; raises Stopped if a signal stopped it

`step_fn(progress)` does one optimisation step and returns its logs (floats); `progress`
in [0, 1] is how far through the budget it is (by steps, or by time in this call), for
learning-rate schedules (cosine_lr). `save()` writes a checkpoint of `loop.step`."""
from __future__ import annotations

import math
import time
from typing import Self

from tqdm import tqdm

from .errors import EverloopError
from .stopping import Stopped, StopSignals


def cosine_lr(opt, base: float, final: float, progress: float) -> float:
    """Set every group's learning rate to base x (a cosine from 1 down to `final` over the
    run); returns it. A late low rate is where the batch-16 noise in the canvas MSE settles."""
    lr = base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


class TrainLoop:
    def __init__(self, *, step: int, steps: int | None, minutes: float | None, save, where, desc: str,
                 progress: bool = True, save_every_minutes: float = 5.0):
        if steps is None and minutes is None:
            raise EverloopError("give --steps N or --minutes M")
        self.step, self.steps, self.save_fn, self.where = step, steps, save, where
        self.budget = None if minutes is None else minutes * 60
        self.save_every, self.progress = save_every_minutes * 60, progress
        self.bar = tqdm(total=steps if steps is not None else int(self.budget), initial=step if steps else 0,
                        unit="step" if steps else "s", disable=not progress, dynamic_ncols=True, desc=desc,
                        delay=2)  # shown after 2 s: an error at the first step stays one line
        self.stop, self.worked = StopSignals(), False
        self.t0 = self.last_save = time.time()
        self.step0 = step

    @property
    def stopping(self) -> bool:
        return self.stop.requested

    def seconds(self) -> float:
        """Seconds of training in this call."""
        return time.time() - self.t0

    def save(self) -> None:
        self.save_fn()
        self.last_save = time.time()

    def run(self, step_fn, end: int | None = None, limit: float | None = None, on_step=None) -> None:
        """Steps until `end` steps in total (default --steps), `limit` seconds in this call
        (default --minutes) or a stop; on_step(logs) after each (logging, sample sheets)."""
        end = self.steps if end is None else end
        limit = self.budget if limit is None else limit
        while (end is None or self.step < end) and (limit is None or self.seconds() < limit) and not self.stopping:
            done = self.step / self.steps if self.steps is not None else self.seconds() / self.budget
            logs = step_fn(min(max(done, 0.0), 1.0))
            bad = [k for k, v in logs.items() if not math.isfinite(v)]
            if bad:
                raise EverloopError(f"non-finite {', '.join(bad)} at step {self.step + 1}; the last good "
                                    f"checkpoint in {self.where} is kept (try a lower learning rate)")
            self.step, self.worked = self.step + 1, True
            if on_step is not None:  # logged before the bar moves: a Ctrl-C there finds it on disk
                on_step(logs)
            now = time.time()
            if self.steps is not None:
                self.bar.update(1)
            else:
                self.bar.n = min(int(now - self.t0), self.bar.total)
                if self.progress and now - self.t0 >= 2:  # the bar's delay; a disabled bar has none
                    self.bar.refresh()
            shown = {k: f"{v:.3f}" for k, v in list(logs.items())[:3] if k not in ("step", "time")}
            self.bar.set_postfix(step=self.step, sps=f"{(self.step - self.step0) / max(now - self.t0, 1e-9):.2f}",
                                 **shown, refresh=False)
            if now - self.last_save > self.save_every:
                self.save()

    def finish(self) -> None:
        """The end of training: save; after a stop signal, say so and raise Stopped."""
        self.bar.close()
        if self.stopping:
            if self.worked:  # else the checkpoint on disk (if any) is this state already
                self.save()
            print(f"stopped by {self.stop.name()} at step {self.step}; "
                  + (f"saved {self.where} (continue with --resume)" if self.worked else "nothing new to save"),
                  flush=True)
            raise Stopped(self.stop.signum, f"stopped by {self.stop.name()}")
        self.save()

    def __enter__(self) -> Self:
        self.stop.__enter__()
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            if kind is not None and issubclass(kind, EverloopError):
                self.bar.leave = False  # the bar goes, so the error is the one line left
                self.bar.close()
            elif kind is not None and issubclass(kind, KeyboardInterrupt) and not issubclass(kind, Stopped):
                self.bar.close()
                if self.stopping:  # a second signal, maybe mid-step: the last checkpoint stands
                    print(f"interrupted at step {self.step}; {self.where} keeps its last checkpoint "
                          f"(continue with --resume)", flush=True)
                else:  # raised by code, or where no handler could be installed: save as Ctrl-C always did
                    self.save_fn()
                    print(f"interrupted at step {self.step}; saved {self.where} (continue with --resume)",
                          flush=True)
        finally:
            self.stop.__exit__()
