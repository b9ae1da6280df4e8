"""Watch the generated stream live: a pygame window, or the producer behind `everloop serve`.

pygame is an optional extra (``everloop[live]``), so it is imported only inside the
functions here; ``import everloop.live`` works without it and the CLI can report a clean
one-line error instead of an ImportError.

``Producer`` is one endless stream generated once for any number of browsers (serve.py
fans its frames out; ``live --web`` is that server with one run).
"""

from __future__ import annotations

import io
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from everloop.errors import EverloopError

NO_DISPLAY = ("no display found: DISPLAY/WAYLAND_DISPLAY are not set; "
              "use `everloop generate RUN --out FILE` to write a video instead")


def _pygame():
    """Import pygame quietly, or explain how to install it."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # no banner on stdout
    try:
        import pygame
    except ImportError:
        raise EverloopError("live view needs pygame, which is not installed; "
                            "pip install 'everloop[live]'") from None
    return pygame


def check_display() -> None:
    """Raise EverloopError unless a pygame window can be opened here.

    Checked before any generation work so that `everloop play` on a headless server fails
    in a second with advice, not after loading a model. On Linux/BSD with neither X11 nor
    Wayland nor an explicit SDL_VIDEODRIVER there is no display; macOS and Windows always
    have one (they set no DISPLAY variable), so there only the real init decides.
    """
    pygame = _pygame()
    env = os.environ
    if (sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
            and not any(env.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"))):
        raise EverloopError(NO_DISPLAY)
    try:
        pygame.display.init()
    except pygame.error as e:
        raise EverloopError(f"no display found: pygame could not open one ({e}); "
                            "use `everloop generate RUN --out FILE` to write a video instead")
    pygame.display.quit()


def _frames(chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Flatten ``[n, H, W, 3]`` chunks into single frames, pulling lazily."""
    for chunk in chunks:
        yield from np.asarray(chunk, dtype=np.uint8)


def play(chunks: Iterable[np.ndarray], fps: int = 30, scale: int = 4,
         title: str = "everloop", max_frames: int | None = None, smooth: bool = False) -> int:
    """Show frames in a window of (W*scale, H*scale) at ``fps`` until Esc, q, the window's
    close button, the end of ``chunks`` or ``max_frames``; return the number shown.

    Scaling is nearest-neighbour by default (crisp pixels, like the model sees them);
    ``smooth=True`` uses pygame's bilinear smoothscale. If generation is slower than
    ``fps`` the window simply runs slower; the measured rate is shown in the title.
    """
    if fps <= 0 or scale <= 0:
        raise EverloopError(f"--fps and --scale must be positive, got {fps} and {scale}")
    check_display()
    pygame = _pygame()
    pygame.display.init()
    try:
        clock, screen, shown, last_title = pygame.time.Clock(), None, 0, time.monotonic()
        for frame in _frames(chunks):
            h, w = frame.shape[:2]
            if screen is None:
                screen = pygame.display.set_mode((w * scale, h * scale))
                pygame.display.set_caption(title)
            # pygame surfaces are (W, H); frombuffer reads the HxWx3 bytes as they lie
            image = pygame.image.frombuffer(np.ascontiguousarray(frame).tobytes(), (w, h), "RGB")
            resize = pygame.transform.smoothscale if smooth else pygame.transform.scale
            screen.blit(resize(image, screen.get_size()), (0, 0))
            pygame.display.flip()
            shown += 1
            if _quit_requested(pygame) or shown == max_frames:
                break  # checked before pulling another frame: no wasted generation
            clock.tick(fps)
            if time.monotonic() - last_title > 1.0:  # update the caption once a second
                pygame.display.set_caption(f"{title} - {clock.get_fps():.1f} fps")
                last_title = time.monotonic()
        return shown
    finally:
        pygame.display.quit()


def _quit_requested(pygame) -> bool:
    """Drain the event queue (which also keeps the window responsive); True on quit keys."""
    for event in pygame.event.get():
        if event.type == pygame.QUIT:
            return True
        if event.type == pygame.KEYDOWN and event.key in (pygame.K_ESCAPE, pygame.K_q):
            return True
    return False


# ---- the producer of `everloop serve`: generate once, encode once --------------------------


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
    """One frame as JPEG; 4:4:4 (no chroma subsampling) because browsers show it scaled up
    with crisp pixels, where halved colour resolution would smear every edge."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


class Producer:
    """One endless stream for many viewers.

    A worker thread steps the model in chunks (rollout.frames: the event loop never waits
    on torch), encodes each frame once and puts it in a queue of at most one chunk, so
    memory and the delay of a control are bounded; when nobody takes frames (paused, no
    viewer) the queue fills and the thread sleeps. The server's pacer calls take() once per
    tick of fps * speed. The controls may be set from any thread: a new seed bumps `epoch`
    and frames of an older epoch are thrown away; a temperature applies from the next chunk.
    """

    def __init__(self, model, name: str, fps: float, interp: int, seed: int = 0,
                 seed_clip_for=None, chunk: int | None = None, quality: int = 90):
        self.model, self.name, self.fps, self.interp = model, name, float(fps), int(interp)
        self.seed, self.speed, self.paused, self.epoch = int(seed), 1.0, False, 0
        self.seed_clip_for = seed_clip_for  # seed -> float [1, T, C, H, W] (families that continue real frames)
        self.chunk = chunk or max(self.interp, round(self.fps))  # about a second of video per decoder call
        self.quality, self.error = quality, None
        self.frames: queue.Queue = queue.Queue(maxsize=self.chunk)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"everloop generate {name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def new_seed(self, seed: int) -> None:
        with self._lock:
            self.seed, self.epoch = int(seed), self.epoch + 1

    def set_temperature(self, tau: float) -> None:
        from everloop.rollout import set_temperature
        set_temperature(self.model, tau)  # a float attribute the worker's next advance() reads

    def take(self) -> bytes | None:
        """The next frame of the current stream, or None if generation is behind."""
        while True:
            try:
                epoch, jpeg = self.frames.get_nowait()
            except queue.Empty:
                return None
            if epoch == self.epoch:
                return jpeg

    def _run(self) -> None:
        from everloop import rollout
        try:
            while not self._stop.is_set():
                with self._lock:
                    epoch, seed = self.epoch, self.seed
                clip = self.seed_clip_for(seed) if self.seed_clip_for else None
                stream = rollout.frames(self.model, None, seed=seed, interp=self.interp, chunk=self.chunk,
                                        seed_clip=clip)
                for chunk in stream:
                    if not all(self._put(epoch, encode_jpeg(f, self.quality)) for f in chunk[0]):
                        break  # stopped or a new seed: start that stream
                stream.close()
        except Exception as e:  # noqa: BLE001 (shown in /stats and on stderr; the server stays up)
            self.error = f"{type(e).__name__}: {e}"
            print(f"everloop: stream {self.name} stopped: {self.error}", file=sys.stderr, flush=True)

    def _put(self, epoch: int, jpeg: bytes) -> bool:
        while not self._stop.is_set() and epoch == self.epoch:
            try:
                self.frames.put((epoch, jpeg), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def seed_clip_picker(data: str, model, config: dict, run: str):
    """seed -> a real clip float [1, T, C, H, W] from DATA (a new seed, a new place in it),
    for families that continue real frames; checked once here, like generate's --seed-clip."""
    from everloop.data import FrameStore, to_float
    store = FrameStore(data)
    meta = config.get("data") or {}
    want = (meta["height"], meta["width"]) if meta.get("height") else (model.frame_size, model.frame_size)
    if want[0] is not None and (store.height, store.width) != tuple(want):
        raise EverloopError(f"--seed-clip {data}: frames are {store.height}x{store.width}, "
                            f"the run {run}'s are {want[0]}x{want[1]}")
    need, stride = model.context_frames, model.clip_stride
    if max(e - s for s, e in store.episodes) < (need - 1) * stride + 1:
        raise EverloopError(f"--seed-clip {data}: no episode holds {need} frames {stride} apart")
    return lambda seed: to_float(store.sample_clips(1, need, stride, np.random.default_rng(seed)))


def load_producer(run: str, a) -> Producer:
    """Load RUN and make its Producer from `everloop serve`'s flags (fps: the run's video
    rate by default; interp: its clip stride, so the stream plays at the source's speed)."""
    import torch

    from everloop.checkpoint import load_run
    from everloop.devices import resolve
    from everloop.rollout import set_temperature
    if a.threads:
        torch.set_num_threads(a.threads)
    model, config = load_run(run, resolve(a.device))
    if a.temperature is not None and (model.has_temperature or len(a.runs) == 1):
        set_temperature(model, a.temperature)  # one run without one: generate's one-line error
    picker = None
    if model.requires_seed_clip:
        if not a.seed_clip:
            raise EverloopError(f"{run}: the {model.family} family continues real frames: give --seed-clip DATA")
        picker = seed_clip_picker(a.seed_clip, model, config, run)
    fps = a.fps or (config.get("data") or {}).get("fps") or 30
    return Producer(model, Path(run).name, fps, a.interp or model.clip_stride, seed=a.seed,
                    seed_clip_for=picker, quality=a.quality)


def check_port(port: int, host: str = "127.0.0.1", flag: str = "--web") -> None:
    """Raise the one-line error now, before a model loads, if ``port`` cannot be listened on
    (0: any free port; an IPv6 address: the server's own start reports it)."""
    if not port or ":" in host:
        return
    if not 1 <= port <= 65535:
        raise EverloopError(f"{flag} {port}: a port is 1 to 65535")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds (aiohttp)
        try:
            s.bind((host, port))
        except OSError as e:  # busy, or below 1024 without the right
            raise EverloopError(f"{flag} {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None
