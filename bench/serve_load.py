"""Load test of `everloop serve` on loopback: many WebSocket viewers plus one that stops reading.

    .venv/bin/python bench/serve_load.py RUN [--viewers 50] [--seconds 60] [--solo-seconds 20] [--json OUT]

It starts `everloop serve RUN --port 0 --threads 1` as a child process (127.0.0.1 only),
then measures two phases:
  1. one viewer for --solo-seconds: the generated fps (from /stats' frame counter);
  2. --viewers live WebSocket viewers plus one stalled viewer (it completes the upgrade with a
     4 KiB receive buffer and never reads again) for --seconds: the generated fps, the fps and
     share of the generated frames each live viewer received, the stalled viewer's sent
     frames and buffered bytes, and the server's RSS (from /proc/PID/status) every 5 s.
Bounded: at most 200 viewers and 600 s a phase; the server is stopped with SIGINT at the end
(its clean exit is checked). Viewers only count frames: decoding is the browser's work.
Results depend on the machine and whatever else runs there: compare rows of one run."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
MAX_VIEWERS, MAX_SECONDS = 200, 600


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Viewer:
    """A WebSocket viewer that reads as fast as it can and counts frames."""

    def __init__(self):
        self.frames, self.ws = 0, None

    async def run(self, session, url):
        async with session.ws_connect(url, max_msg_size=1 << 22) as ws:
            self.ws = ws
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY:
                    self.frames += 1


def stalled_viewer(port: int) -> socket.socket:
    """Upgrade to a WebSocket, then never read again (a frozen tab, a dead wifi)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /ws/0 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert b" 101 " in s.recv(200), "the stalled viewer's upgrade failed"
    return s


async def stats(session, base) -> dict:
    async with session.get(base + "/stats") as r:
        return await r.json()


async def phase(session, base, pid, viewers: int, seconds: float, stalled: bool) -> dict:
    port = int(base.rsplit(":", 1)[1])
    live = [Viewer() for _ in range(viewers)]
    tasks = [asyncio.create_task(v.run(session, base.replace("http", "ws") + "/ws/0")) for v in live]
    stuck = stalled_viewer(port) if stalled else None
    while sum(len(s["viewers"]) for s in (await stats(session, base))["streams"]) < viewers + bool(stalled):
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # settle: everyone connected and receiving
    first = await stats(session, base)
    start, got0 = time.monotonic(), [v.frames for v in live]
    memory = [(0.0, rss_mb(pid))]
    while (elapsed := time.monotonic() - start) < seconds:
        await asyncio.sleep(min(5.0, seconds - elapsed))
        memory.append((round(time.monotonic() - start, 1), rss_mb(pid)))
    last = await stats(session, base)
    took = time.monotonic() - start
    got = [v.frames - g for v, g in zip(live, got0)]
    made = last["streams"][0]["frames"] - first["streams"][0]["frames"]
    slow = [x for x in last["streams"][0]["viewers"] if x["kind"] == "websocket"]
    slow = min(slow, key=lambda x: x["sent"]) if stalled else None
    for v in live:
        await v.ws.close()
    for t in tasks:
        t.cancel()
    if stuck:
        stuck.close()
    await asyncio.sleep(1.0)
    return {"viewers": viewers, "stalled": stalled, "seconds": round(took, 1), "generated_fps": made / took,
            "target_fps": last["streams"][0]["fps_target"], "late_ticks": last["streams"][0]["late_ticks"]
            - first["streams"][0]["late_ticks"],
            "viewer_fps": [g / took for g in got], "viewer_share": [g / max(made, 1) for g in got],
            "stalled_sent": slow["sent"] if slow else None, "stalled_buffered": slow["buffered"] if slow else None,
            "rss_mb": memory}


async def measure(base, pid, a) -> tuple[dict, dict]:
    async with aiohttp.ClientSession() as session:
        solo = await phase(session, base, pid, 1, a.solo_seconds, stalled=False)
        crowd = await phase(session, base, pid, a.viewers, a.seconds, stalled=True)
    return solo, crowd


def report(solo: dict, crowd: dict, a) -> str:
    fps, share, mem = crowd["viewer_fps"], crowd["viewer_share"], [m for _, m in crowd["rss_mb"]]
    lines = [
        (f"run {a.run}; {platform.node()}, {os.cpu_count()} CPUs, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
        f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()}"),
        f"target fps {crowd['target_fps']:.1f}",
        f"generated fps, 1 viewer ({solo['seconds']:.0f} s):                {solo['generated_fps']:.2f}",
        (f"generated fps, {crowd['viewers']} viewers + 1 stalled ({crowd['seconds']:.0f} s):  {crowd['generated_fps']:.2f} "
        f"({100 * crowd['generated_fps'] / solo['generated_fps']:.1f}% of 1 viewer; late ticks {crowd['late_ticks']})"),
        f"fps each live viewer received: min {min(fps):.2f}, median {statistics.median(fps):.2f}, max {max(fps):.2f}",
        (f"share of generated frames each live viewer received: min {100 * min(share):.1f}%, "
        f"median {100 * statistics.median(share):.1f}%"),
        f"stalled viewer: {crowd['stalled_sent']} frames sent, {crowd['stalled_buffered']} bytes buffered at the end",
        "server RSS (MB) over the minute: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in crowd["rss_mb"]),
        f"RSS growth over the {crowd['viewers']}+1-viewer phase: {mem[-1] - mem[0]:+.1f} MB (max {max(mem) - mem[0]:+.1f})",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--viewers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--solo-seconds", type=float, default=20.0)
    p.add_argument("--fps", type=float, help="passed to everloop serve (default: the run's)")
    p.add_argument("--json", help="also write the numbers here")
    a = p.parse_args()
    if not (1 <= a.viewers <= MAX_VIEWERS and 0 < a.seconds <= MAX_SECONDS and 0 < a.solo_seconds <= MAX_SECONDS):
        p.error(f"--viewers 1..{MAX_VIEWERS}, --seconds and --solo-seconds up to {MAX_SECONDS}")
    cmd = [sys.executable, "-m", "everloop.cli", "serve", a.run, "--host", "127.0.0.1", "--port", "0",
           "--threads", "1", "--max-viewers", str(a.viewers + 8)] + (["--fps", str(a.fps)] if a.fps else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = server.stdout.readline()
        if "serving http://" not in line:
            raise SystemExit(f"the server did not start: {line!r}")
        base = line.split()[1].rstrip("/")
        solo, crowd = asyncio.run(measure(base, server.pid, a))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed after 60 s"
    text = report(solo, crowd, a) + f"\nserver stopped on SIGINT with exit status {code}"
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"solo": solo, "crowd": crowd, "text": text}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
