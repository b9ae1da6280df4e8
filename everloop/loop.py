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
learning-rate schedules (cosine_lr). `save()` writes a checkpoint of `loop.step`.

Under torch.distributed (distributed.py) every process runs this loop in step: what a
clock or a signal decides (stop, --minutes, a save every --save-every) is agreed after each
step (distributed.agree: any process's stop, rank 0's clock), so all take the same steps
and save together; only rank 0 shows the bar and prints. At world size 1 nothing changes."""
from __future__ import annotations

import math
import signal
import time
from typing import Self

from tqdm import tqdm

from . import distributed
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
        progress = progress and distributed.is_main()  # one bar per run, not one per process
        self.save_every, self.progress = save_every_minutes * 60, progress
        self.bar = tqdm(total=steps if steps is not None else int(self.budget), initial=step if steps else 0,
                        unit="step" if steps else "s", disable=not progress, dynamic_ncols=True, desc=desc,
                        delay=2)  # shown after 2 s: an error at the first step stays one line
        self.stop, self.worked = StopSignals(), False
        self.t0 = self.last_save = time.time()
        self.step0 = step
        self.together = distributed.active()
        self._agreed = (False, 0.0, False)  # (stop, seconds, save due) as the processes last agreed

    @property
    def stopping(self) -> bool:
        """A stop was asked for (under torch.distributed: by any process, as last agreed)."""
        return self._agreed[0] if self.together else self.stop.requested

    def _clock(self) -> float:
        """Seconds of training in this call that decisions use (rank 0's, under torch.distributed)."""
        return self._agreed[1] if self.together else self.seconds()

    def _agree(self) -> None:
        """Under torch.distributed: every process learns any one's stop and rank 0's clock."""
        if self.together:
            self._agreed = distributed.agree(self.stop.requested, self.seconds(),
                                             time.time() - self.last_save > self.save_every)

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
        self._agree()
        while (end is None or self.step < end) and (limit is None or self._clock() < limit) and not self.stopping:
            done = self.step / self.steps if self.steps is not None else self._clock() / self.budget
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
            self._agree()
            if (self._agreed[2] if self.together else now - self.last_save > self.save_every):
                self.save()

    def finish(self) -> None:
        """The end of training: save; after a stop signal, say so and raise Stopped."""
        self.bar.close()
        self._agree()  # a signal since the last step
        if self.stopping:
            if self.worked:  # else the checkpoint on disk (if any) is this state already
                self.save()
            if distributed.is_main():
                print(f"stopped by {self._signal_name()} at step {self.step}; "
                      + (f"saved {self.where} (continue with --resume)" if self.worked else "nothing new to save"),
                      flush=True)
            raise Stopped(self.stop.signum or signal.SIGTERM, f"stopped by {self._signal_name()}")
        self.save()

    def _signal_name(self) -> str:
        """The signal that stopped training (another process's, if this one got none)."""
        return self.stop.name() or "a signal to another process"

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
                if self.stop.requested or self.together:
                    # a second signal, maybe mid-step, or one process of several (the others
                    # cannot save with it): the last checkpoint stands
                    print(f"interrupted at step {self.step}; {self.where} keeps its last checkpoint "
                          f"(continue with --resume)", flush=True)
                else:  # raised by code, or where no handler could be installed: save as Ctrl-C always did
                    self.save_fn()
                    print(f"interrupted at step {self.step}; saved {self.where} (continue with --resume)",
                          flush=True)
        finally:
            self.stop.__exit__()
