"""everloop serve RUN [RUN ...]: one endless stream per run, to any number of browsers.

Per run, a Producer (live.py: a worker thread generates and JPEG-encodes each frame once)
and a Channel on the asyncio loop: a pacer puts a frame per tick of fps * speed in one
"latest frame" slot and wakes every viewer, which sends the latest frame when its socket
can take one. A slow viewer skips frames; nothing queues per viewer beyond the ~64 KiB a
write may buffer before it waits. Why aiohttp, and the measured load: docs/serve.md."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import os
import signal
import threading
import time
from importlib import resources
from pathlib import Path

from .errors import EverloopError
from .hosts import allowed_hosts, host_refusal
from .validate import number, positive

STALL_S = 60.0  # a viewer that cannot take one frame for this long is dropped: it holds a slot
SPEED_RANGE, TEMPERATURE_RANGE = (0.05, 16.0), (0.01, 100.0)

try:  # an optional extra (everloop[serve]): `import everloop.serve` works without it
    from aiohttp import WSCloseCode, web
except ImportError:
    web = None


def _aiohttp():
    if web is None:
        raise EverloopError("the web server needs aiohttp, which is not installed; pip install 'everloop[serve]'")
    return web


class Viewer:
    def __init__(self, kind: str, seen: int, transport=None):
        self.kind, self.seen, self.first, self.sent, self.state_version = kind, seen, seen, 0, -1
        self.since, self.transport = time.monotonic(), transport  # its buffered bytes are in /stats

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport and not self.transport.is_closing() else 0


class Channel:
    """One stream on the event loop: the latest encoded frame, its viewers, its pacer."""

    def __init__(self, producer, index: int):
        self.producer, self.index = producer, index
        self.frame_no, self.jpeg, self.state_version, self.closed, self.late = 0, b"", 0, False, 0
        self.viewers: set[Viewer] = set()
        self.made = collections.deque(maxlen=512)  # publish times, for the fps in /stats
        self._changed = asyncio.Event()

    def wake(self) -> None:
        # Every waiter holds the current Event; replacing it before set() means a viewer
        # that looks again after waking waits for the next change, not this one.
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def publish(self, jpeg: bytes) -> None:
        self.frame_no, self.jpeg = self.frame_no + 1, jpeg
        self.made.append(time.monotonic())
        self.wake()

    def state(self) -> dict:
        p, model = self.producer, self.producer.model
        return {"run": self.index, "name": p.name, "family": model.family, "seed": p.seed, "fps": p.fps,
                "speed": p.speed, "paused": p.paused, "has_temperature": model.has_temperature,
                "temperature": model.temperature if model.has_temperature else None,
                "stream_error": p.error}

    def control(self, text: str) -> None:
        """Apply a control message from a page (any viewer steers the one shared stream)."""
        p, known = self.producer, {"seed", "temperature", "speed", "paused"}
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not msg or set(msg) - known:
            raise ValueError(f"a control is a JSON object with some of {sorted(known)}")
        seed = msg.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
            raise ValueError("seed: an integer 0 to 2^63-1")
        for key, (lo, hi) in (("speed", SPEED_RANGE), ("temperature", TEMPERATURE_RANGE)):
            v = msg.get(key)
            if key in msg and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                   and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"{key}: a number {lo:g} to {hi:g}")
        if "temperature" in msg and not p.model.has_temperature:
            raise ValueError(f"temperature: the {p.model.family} family has no sampling temperature")
        if "paused" in msg and not isinstance(msg["paused"], bool):
            raise ValueError("paused: true or false")
        if "seed" in msg:
            p.new_seed(msg["seed"])
        if "temperature" in msg:
            p.set_temperature(float(msg["temperature"]))
        p.speed = float(msg.get("speed", p.speed))
        p.paused = msg.get("paused", p.paused)
        self.state_version += 1
        self.wake()  # every viewer sends the new state before its next frame

    async def pace(self) -> None:
        """Publish one frame per tick; a clock, not a sleep after the work; if the loop falls
        behind, restart the clock instead of bursting to catch up."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.closed:
            period = 1.0 / (self.producer.fps * self.producer.speed)
            next_at += period
            delay = next_at - loop.time()
            if delay < -period:
                next_at = loop.time()
            await asyncio.sleep(max(delay, 0))
            if self.producer.paused or not self.viewers:
                continue  # the worker's queue fills and it sleeps
            jpeg = self.producer.take()
            if jpeg is None:
                self.late += 1  # generation is slower than fps * speed here
            else:
                self.publish(jpeg)

    def dropped(self, viewer: Viewer) -> int:
        """Frames published since the viewer came that it was not sent (skipped, or still due)."""
        return max(self.frame_no - viewer.first - viewer.sent, 0)

    def fps(self) -> float:
        now = time.monotonic()
        recent = [t for t in self.made if now - t <= 5.0]
        return 0.0 if len(recent) < 2 else (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    async def frames_for(self, viewer: Viewer, send_state=None):
        """The latest frame each time the viewer is ready for one (an async iterator)."""
        while not self.closed:
            if send_state is not None and viewer.state_version != self.state_version:
                viewer.state_version = self.state_version
                await asyncio.wait_for(send_state(self.state()), STALL_S)
            if self.frame_no > viewer.seen and self.jpeg:
                viewer.seen = self.frame_no
                yield self.jpeg
            else:
                await self._changed.wait()


class Server:
    """The aiohttp application around the channels."""

    def __init__(self, producers, max_viewers: int, hosts: set[str]):
        self.producers, self.max_viewers, self.hosts = producers, max_viewers, hosts
        self.channels: list[Channel] = []
        self.sockets: set = set()
        self.started, self.port, self.loop, self.stop = time.monotonic(), None, None, None
        self.page = resources.files("everloop").joinpath("assets/serve.html").read_bytes()

    def app(self):
        _aiohttp()  # only these five routes: no static folder, so no path can reach a file
        app = web.Application(middlewares=[web.middleware(lambda request, handler: self._host_check(request, handler))])
        for path, handler in (("/", self.index), ("/runs", self.runs), ("/stats", self.stats),
                              ("/ws/{run}", self.websocket), ("/stream.mjpg", self.mjpeg)):
            app.router.add_get(path, handler)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _start(self, app) -> None:
        self.channels = [Channel(p, i) for i, p in enumerate(self.producers)]
        for p in self.producers:
            p.start()
        self.pacers = [asyncio.create_task(c.pace()) for c in self.channels]

    async def _shutdown(self, app) -> None:
        for c in self.channels:
            c.closed = True
            c.wake()
        await close_sockets(self.sockets)

    async def _cleanup(self, app) -> None:
        for t in self.pacers:
            t.cancel()
        await asyncio.to_thread(lambda: [p.stop() for p in self.producers])

    @property
    def viewers(self) -> int:
        return sum(len(c.viewers) for c in self.channels)

    async def _host_check(self, request, handler):  # the middleware every request passes
        return host_refusal(request, self.hosts) or await handler(request)

    def describe(self) -> str:
        return ", ".join(f"{i}: {p.name}" for i, p in enumerate(self.producers))

    def _join(self, request, text: str | None, kind: str) -> tuple[Channel, Viewer]:
        """The run asked for and a new viewer of it; 404 for no such run, 503 past the cap
        (counted and joined with no await between, so two at once cannot both pass)."""
        if not (text or "").isdigit() or int(text) >= len(self.channels):
            raise web.HTTPNotFound(text=f"no run {text!r}: there are {len(self.channels)}\n")
        if self.viewers >= self.max_viewers:
            raise web.HTTPServiceUnavailable(text=f"everloop: {self.max_viewers} viewers already (--max-viewers)\n")
        channel = self.channels[int(text)]
        viewer = Viewer(kind, max(channel.frame_no - 1, 0), request.transport)
        channel.viewers.add(viewer)
        return channel, viewer

    async def index(self, request):
        return web.Response(body=self.page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def runs(self, request):
        return web.json_response([c.state() for c in self.channels])

    async def stats(self, request):
        now = time.monotonic()
        return web.json_response({
            "uptime_s": round(now - self.started, 1), "rss_mb": rss_mb(), "viewers": self.viewers,
            "max_viewers": self.max_viewers,
            "streams": [{**c.state(), "frames": c.frame_no, "fps_generated": round(c.fps(), 2),
                         "fps_target": c.producer.fps * c.producer.speed, "late_ticks": c.late,
                         "viewers": [{"kind": v.kind, "sent": v.sent, "dropped": c.dropped(v), "buffered": v.buffered(),
                                      "seconds": round(now - v.since, 1)} for v in c.viewers]}
                        for c in self.channels]})

    async def websocket(self, request):
        channel, viewer = self._join(request, request.match_info.get("run"), "websocket")
        ws, sender = web.WebSocketResponse(max_msg_size=4096, compress=False), None  # deflating JPEG per viewer would undo the one encode
        try:
            await ws.prepare(request)
            self.sockets.add(ws)
            sender = asyncio.create_task(self._send_frames(ws, channel, viewer))
            async for msg in ws:
                if msg.type != web.WSMsgType.TEXT:
                    continue
                try:
                    channel.control(msg.data)
                except ValueError as e:
                    await ws.send_str(json.dumps({"error": str(e)}))
        finally:
            if sender:
                sender.cancel()
            channel.viewers.discard(viewer)
            self.sockets.discard(ws)
        return ws

    async def _send_frames(self, ws, channel: Channel, viewer: Viewer) -> None:
        try:
            async for jpeg in channel.frames_for(viewer, lambda state: ws.send_str(json.dumps(state))):
                await asyncio.wait_for(ws.send_bytes(jpeg), STALL_S)
                viewer.sent += 1
        except TimeoutError:
            viewer.transport.abort()  # stalled for STALL_S: a polite close would wait on it again
        except (ConnectionError, RuntimeError):
            pass  # gone (aiohttp raises ConnectionResetError subclasses, or RuntimeError once closing)
        if not ws.closed:
            await ws.close()

    async def mjpeg(self, request):
        channel, viewer = self._join(request, request.query.get("run", "0"), "mjpeg")
        resp = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                           "Cache-Control": "no-store"})
        try:
            await resp.prepare(request)
            async for jpeg in channel.frames_for(viewer):
                part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(jpeg), jpeg)
                await asyncio.wait_for(resp.write(part), STALL_S)
                viewer.sent += 1
        except TimeoutError:
            viewer.transport.abort()  # stalled for STALL_S
        except (ConnectionError, RuntimeError):
            pass  # the tab was closed mid-frame
        finally:
            channel.viewers.discard(viewer)
        return resp


async def close_sockets(sockets) -> None:
    """Tell every open WebSocket the server is stopping (2 s each at most: a stalled one is cut)."""
    for ws in list(sockets):
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping"), 2)


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux /proc; None elsewhere)."""
    try:
        return round(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20, 1)
    except (OSError, ValueError, IndexError):
        return None


async def _run(server: Server, host: str, port: int, flag: str) -> None:
    web = _aiohttp()
    runner = web.AppRunner(server.app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            raise EverloopError(f"{flag} {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None
        server.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked for
        print(f"serving http://{f'[{host}]' if ':' in host else host}:{server.port}/ ({server.describe()}; "
              "Ctrl-C stops)", flush=True)
        server.loop, server.stop = asyncio.get_running_loop(), asyncio.Event()  # a test's thread sets stop
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                server.loop.add_signal_handler(sig, server.stop.set)
        await server.stop.wait()
    finally:
        await runner.cleanup()


def serve(producers, host: str = "127.0.0.1", port: int = 8000, max_viewers: int = 64,
          allow_hosts=(), flag: str = "--port") -> int:
    """Serve until SIGINT/SIGTERM; returns the frames published over all streams."""
    server = Server(producers, max_viewers, allowed_hosts(host, allow_hosts))
    asyncio.run(_run(server, host, port, flag))
    return sum(c.frame_no for c in server.channels)


def cmd_serve(a, flag: str = "--port") -> None:
    from .live import check_port, load_producer
    from .serve_play import serve_games, takes_actions
    _aiohttp()
    allowed_hosts(a.host, a.allow_host)  # a bad --allow-host fails before any model loads
    check_port(a.port, a.host, flag)
    if any(takes_actions(run) for run in a.runs):  # a game per browser instead of one shared stream
        return serve_games(a)
    served = serve([load_producer(run, a) for run in a.runs], a.host, a.port, a.max_viewers, a.allow_host, flag)
    print(f"stopped after {served} frames")


def cmd_live_web(a) -> None:
    """`live RUN --web PORT`: this server with one run."""
    import argparse
    cmd_serve(argparse.Namespace(runs=[a.run], host="127.0.0.1", port=a.web, fps=a.fps, interp=a.interp,
                                 max_viewers=64, allow_host=[], seed_clip=a.seed_clip, seed=a.seed,
                                 temperature=a.temperature, quality=90, threads=a.threads, device=a.device),
              flag="--web")


def add_serve_parser(subparsers) -> None:
    """`everloop serve RUN [RUN ...]`: see docs/serve.md."""
    from .cli import FPS, SEED, _add_device
    s = subparsers.add_parser("serve", help="endless streams of one or more runs to many browsers")
    s.add_argument("runs", nargs="+", metavar="RUN")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=number("--port", int, lo=0, hi=65535), default=8000, help="0: any free port")
    s.add_argument("--fps", type=FPS, help="frames per second of every stream (default: each run's video rate)")
    s.add_argument("--interp", type=positive("--interp", hi=1000), help="frames per model step (default: clip stride)")
    s.add_argument("--max-viewers", type=positive("--max-viewers", hi=100000), default=64,
                   help="WebSocket + MJPEG viewers at once, all runs together (past it: HTTP 503)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer to this Host name (a proxy's, a LAN name); repeatable")
    s.add_argument("--seed-clip", metavar="DATA", help="real frames for families that continue them (multiscale)")
    s.add_argument("--seed", type=SEED, default=0, help="the first stream (the page's New stream picks others)")
    s.add_argument("--temperature", type=positive("--temperature", float, hi=100), help="families that have one")
    s.add_argument("--quality", type=number("--quality", int, lo=1, hi=95), default=90, help="JPEG quality")
    s.add_argument("--threads", type=positive("--threads", hi=1024))
    _add_device(s)
    s.set_defaults(func=cmd_serve)
