"""Watch the generated stream live: a pygame window, or an MJPEG page in the browser.

pygame is an optional extra (``everloop[live]``), so it is imported only inside the
functions here; ``import everloop.live`` works without it and the CLI can report a clean
one-line error instead of an ImportError.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


# ---- browser mode: MJPEG over the standard library's http.server -------------------------


def _listen(host: str, port: int, handler) -> ThreadingHTTPServer:
    if not 1 <= port <= 65535:
        raise EverloopError(f"--web {port}: a port is 1 to 65535")
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as e:  # busy, or below 1024 without the right
        raise EverloopError(f"--web {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None


def check_port(port: int, host: str = "127.0.0.1") -> None:
    """Raise the one-line --web error now if ``port`` cannot be listened on."""
    _listen(host, port, BaseHTTPRequestHandler).server_close()

PAGE = """<!doctype html><title>{title}</title>
<body style="margin:0;background:#000;display:grid;place-items:center;height:100vh">
<img src="/stream" width="{w}" height="{h}" style="image-rendering:pixelated" alt="{title}">
"""


class _Latest:
    """The newest JPEG, shared by the generating thread and every viewer's thread."""

    def __init__(self):
        self.cond = threading.Condition()
        self.jpeg, self.index, self.size, self.stopped = b"", 0, (0, 0), False

    def publish(self, jpeg: bytes, size) -> None:
        with self.cond:
            self.jpeg, self.size, self.index = jpeg, size, self.index + 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def wait_newer(self, seen: int):
        """Block until a frame newer than ``seen`` exists; None once stopped."""
        with self.cond:
            self.cond.wait_for(lambda: self.index > seen or self.stopped)
            return None if self.stopped else (self.index, self.jpeg)


def serve(chunks: Iterable[np.ndarray], fps: int = 30, port: int = 8000, scale: int = 4,
          title: str = "everloop", max_frames: int | None = None, host: str = "127.0.0.1") -> int:
    """Stream frames as MJPEG: open http://127.0.0.1:PORT/ in a browser; Ctrl-C stops.

    Works on headless machines (e.g. over an SSH tunnel) where ``play`` cannot. Frames
    are generated at ``fps`` whether or not anyone watches; every viewer gets the newest
    frame, so a slow connection drops frames instead of piling them up in memory. JPEGs are
    sent at native size and scaled by the browser (crisp pixels, little bandwidth).
    Returns the number of frames generated.
    """
    from PIL import Image

    latest = _Latest()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/":
                latest.wait_newer(0)  # the page needs the frame size
                h, w = latest.size
                body = PAGE.format(title=title, w=w * scale, h=h * scale).encode()
                self._head("text/html; charset=utf-8", len(body))
                self.wfile.write(body)
            elif self.path == "/stream":
                self._head("multipart/x-mixed-replace; boundary=frame")
                seen = 0
                while (got := latest.wait_newer(seen)) is not None:
                    seen, jpeg = got
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         b"Content-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg))
                    except (BrokenPipeError, ConnectionResetError):
                        return  # the viewer closed the tab
            else:
                self.send_error(404)

        def _head(self, ctype, length=None):
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-store")
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()

        def log_message(self, *args):  # keep the terminal quiet
            pass

    server = _listen(host, port, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"serving on http://{host}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
    made, next_at = 0, time.monotonic()
    try:
        for frame in _frames(chunks):
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, "JPEG", quality=90)
            latest.publish(buf.getvalue(), frame.shape[:2])
            made += 1
            if made == max_frames:
                break
            # pace like a clock (not "sleep 1/fps after the work"); if generation falls
            # behind, restart the clock rather than bursting to catch up
            next_at += 1 / fps
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.monotonic()
    except KeyboardInterrupt:
        pass
    finally:
        latest.stop()
        server.shutdown()
        server.server_close()
    return made
