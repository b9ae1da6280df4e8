"""everloop serve on tiny runs over real loopback sockets: the page, frames over a WebSocket,
the controls, a stalled viewer beside a live one, the Host check, the viewer cap, /stats,
MJPEG, a socket closed mid-frame, bad flags, and a clean stop on SIGINT/SIGTERM.
No timing assertions: speed and the 51-viewer load belong to bench/serve_load.py."""
import argparse
import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import blob_frames, write_store
from PIL import Image

aiohttp = pytest.importorskip("aiohttp")

from everloop import serve as srv
from everloop.live import Producer, load_producer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


def tiny_runs(tmp_path_factory) -> dict:
    """A tiny run of every family on 16x16 frames, and their data (multiscale's seed clips)."""
    from everloop.train import TrainArgs, train
    root = tmp_path_factory.mktemp("serve")
    data = write_store(root / "data", blob_frames())
    out = {"data": str(data)}
    for family in ("duralava", "worldmodel", "multiscale"):
        out[family] = str(train(TrainArgs(data=str(data), out=str(root / family), family=family, preset="tiny", steps=2,
                                      sample_every=0, progress=False, precision="fp32")))
    return out


def flags(runs_, **kw):
    base = {"runs": runs_, "threads": None, "device": "cpu", "temperature": None, "seed_clip": None, "fps": 60,
            "interp": None, "seed": 0, "quality": 90}
    return argparse.Namespace(**{**base, **kw})


@contextlib.contextmanager
def running(run_paths, max_viewers=64, allow=(), **kw):
    """A real server on 127.0.0.1:<free port> in a thread with its own event loop."""
    a = flags(run_paths, **kw)
    server = srv.Server([load_producer(r, a) for r in run_paths], max_viewers, srv.allowed_hosts("127.0.0.1", allow))
    with serving(server) as url:
        yield server, url
    assert not any(p._thread.is_alive() for p in server.producers), "a generator thread outlived the server"


@contextlib.contextmanager
def serving(server):
    """Any everloop server object (serve.Server, serve_play.GameServer) on 127.0.0.1:<free
    port> in a thread with its own event loop; yields its URL and stops it after."""
    thread = threading.Thread(target=lambda: asyncio.run(srv._run(server, "127.0.0.1", 0, "--port")), daemon=True)
    thread.start()
    for _ in range(400):
        if server.stop is not None:
            break
        time.sleep(0.025)
    assert server.port, "the server did not start"
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.loop.call_soon_threadsafe(server.stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def until(check, what: str, seconds: float = 120.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.05)


def run_async(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def next_frame(ws) -> Image.Image:
    while True:
        msg = await ws.receive()
        if msg.type == aiohttp.WSMsgType.BINARY:
            return Image.open(io.BytesIO(msg.data))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg


async def next_state(ws, want: dict) -> dict:
    """The first state (or error) message that has every key of `want` with that value."""
    while True:
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT:
            state = json.loads(msg.data)
            if all(state.get(k) == v for k, v in want.items()):
                return state


async def next_error(ws) -> str:
    while True:
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.TEXT and "error" in json.loads(msg.data):
            return json.loads(msg.data)["error"]


def test_page_runs_and_frames_of_every_family(runs):
    paths = [runs["duralava"], runs["worldmodel"], runs["multiscale"]]
    with running(paths, seed_clip=runs["data"]) as (_, url):
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/") as r:
                    page = await r.text()
                    assert r.status == 200 and r.content_type == "text/html"
                assert "<canvas" in page and "pixelated" in page and "/ws/" in page
                async with s.get(url + "/runs") as r:
                    listed = await r.json()
                assert [x["family"] for x in listed] == ["duralava", "worldmodel", "multiscale"]
                assert [x["has_temperature"] for x in listed] == [False, True, False]
                for i in range(3):
                    async with s.ws_connect(f"{url}/ws/{i}") as ws:
                        assert (await next_state(ws, {"run": i}))["name"] == Path(paths[i]).name
                        for _ in range(3):
                            assert (await next_frame(ws)).size == (16, 16)
        run_async(go())


def test_controls_steer_the_shared_stream(runs):
    with running([runs["worldmodel"]]) as (server, url):
        channel, producer = server.channels[0], server.producers[0]

        async def go():
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws/0") as ws, \
                    s.ws_connect(url + "/ws/0") as other:
                await next_frame(ws)
                await ws.send_json({"seed": 5})
                assert (await next_state(other, {"seed": 5}))["seed"] == 5  # every viewer hears it
                assert producer.seed == 5 and producer.epoch == 1
                await ws.send_json({"temperature": 0.5, "speed": 2})
                await next_state(ws, {"temperature": 0.5, "speed": 2})
                assert producer.model.temperature == 0.5 and producer.speed == 2
                await ws.send_json({"paused": True})
                await next_state(ws, {"paused": True})
                held = channel.frame_no
                await asyncio.sleep(0.5)
                assert channel.frame_no == held  # the pacer publishes nothing while paused
                await ws.send_json({"paused": False})
                await next_state(ws, {"paused": False})
                await next_frame(ws)
                for bad, word in (({"speed": "fast"}, "speed"), ({"temperature": float("inf")}, "temperature"),
                                  ({"seed": -1}, "seed"), ({"volume": 3}, "control"), ([1], "control")):
                    await ws.send_str(json.dumps(bad))
                    assert word in (await next_error(ws))
                await ws.send_str("not json")
                assert "control" in await next_error(ws)
                assert (await next_frame(ws)).size == (16, 16)  # and the stream runs on
        run_async(go())


def test_a_family_without_temperature_refuses_one(runs):
    with running([runs["duralava"]]) as (_, url):
        async def go():
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws/0") as ws:
                await ws.send_json({"temperature": 0.5})
                assert "no sampling temperature" in (await next_error(ws))
        run_async(go())


def first_frames(producer: Producer, n: int) -> list[bytes]:
    producer.start()
    try:
        got = []
        while len(got) < n:
            jpeg = producer.take()
            if jpeg is None:
                time.sleep(0.01)
            else:
                got.append(jpeg)
        return got
    finally:
        producer.stop()


def test_seed_and_temperature_change_what_is_generated(runs):
    def make(seed=0, tau=None):
        return load_producer(runs["worldmodel"], flags([runs["worldmodel"]], seed=seed, temperature=tau))
    base = first_frames(make(), 12)
    assert first_frames(make(), 12) == base  # one seed, one stream
    assert first_frames(make(seed=1), 12) != base
    assert first_frames(make(tau=0.2), 12) != base


def raw_connect(port: int, request: str, rcvbuf: int = 4096) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", port))
    s.sendall(request.encode())
    return s


def ws_request(port: int, path: str, host: str | None = None) -> str:
    return (f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_a_stalled_viewer_neither_stalls_others_nor_grows_memory(runs):
    with running([runs["duralava"]], fps=1000) as (server, url):  # fills the stalled socket's buffers sooner
        channel = server.channels[0]
        stalled = raw_connect(server.port, ws_request(server.port, "/ws/0"))  # upgrades, then never reads
        try:
            async def go():
                async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws/0") as ws:
                    while len(channel.viewers) < 2:
                        await asyncio.sleep(0.05)
                    await next_frame(ws)
                    history, still = [], 0
                    for _ in range(400):  # until the stalled socket's buffers are full and it gets nothing
                        for _ in range(30):
                            await next_frame(ws)
                        history.append({v: (v.sent, v.buffered()) for v in channel.viewers})
                        if len(history) > 1:
                            still = still + 1 if any(history[-1][v][0] == history[-2][v][0] for v in history[-1]) else 0
                        if still >= 3:
                            break
                    return history
            history = run_async(go())
            last, before = history[-1], history[-4]
            stuck = [v for v in last if last[v][0] == before[v][0]]
            moving = [v for v in last if last[v][0] > before[v][0]]
            assert len(stuck) == 1 and len(moving) == 1, "one viewer stalls, the other keeps receiving"
            assert server.channels[0].dropped(stuck[0]) >= 60  # it skips to the latest frame instead of queueing them
            assert max(b for h in history for _, b in h.values()) < 1 << 20  # what a stalled socket holds
        finally:
            stalled.close()


def test_a_viewer_stalled_past_the_limit_is_dropped(runs, monkeypatch):
    monkeypatch.setattr(srv, "STALL_S", 0.5)  # 60 s in use
    with running([runs["duralava"]], fps=1000) as (server, _):
        stalled = raw_connect(server.port, ws_request(server.port, "/ws/0"))
        mjpeg = raw_connect(server.port, f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n")
        try:
            until(lambda: server.viewers == 2, "both joined")
            until(lambda: server.viewers == 0, "both dropped once their buffers are full and STALL_S passed")
        finally:
            stalled.close()
            mjpeg.close()


def test_host_check_paths_and_origin(runs):
    with running([runs["duralava"]], allow=("wall.local",)) as (server, _):
        port = server.port

        def get(path, host=None, extra=""):
            with raw_connect(port, f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\n{extra}"
                                   "Connection: close\r\n\r\n", rcvbuf=1 << 16) as s:
                return s.recv(4096).split(b" ", 2)[1]
        assert get("/") == b"200"
        assert get("/", host=f"localhost:{port}") == b"200"
        assert get("/", host=f"wall.local:{port}") == b"200"  # --allow-host
        assert get("/", host=f"evil.example:{port}") == b"403"  # DNS rebinding
        assert get("/stats", host="evil.example") == b"403"
        with raw_connect(port, ws_request(port, "/ws/0", host=f"evil.example:{port}")) as s:
            assert s.recv(4096).split(b" ", 2)[1] == b"403"
        assert get("/ws/0", extra="Origin: http://evil.example\r\n") == b"403"  # a foreign page's socket
        for path in ("/../everloop/serve.py", "/assets/serve.html", "/serve.html", "/etc/passwd", "/ws/7",
                     "/stream.mjpg?run=9"):
            assert get(path) == b"404", path
        assert get("/runs") == b"200"  # and the server still answers


def test_viewer_cap_gives_503_and_frees_slots(runs):
    with running([runs["duralava"]], max_viewers=2) as (server, url):
        async def go():
            async with aiohttp.ClientSession() as s:
                a = await s.ws_connect(url + "/ws/0")
                async with s.ws_connect(url + "/ws/0") as b:
                    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                        await s.ws_connect(url + "/ws/0")
                    assert e.value.status == 503
                    async with s.get(url + "/stream.mjpg") as r:
                        assert r.status == 503
                    await a.close()
                    while server.viewers > 1:
                        await asyncio.sleep(0.05)
                    async with s.ws_connect(url + "/ws/0") as c:  # a freed slot is a slot again
                        await next_frame(c)
                    await next_frame(b)
        run_async(go())


def test_stats_fields(runs):
    with running([runs["duralava"]]) as (_, url):
        async def go():
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "/ws/0") as ws:
                for _ in range(5):
                    await next_frame(ws)
                async with s.get(url + "/stats") as r:
                    return await r.json()
        stats = run_async(go())
    assert stats["viewers"] == 1 and stats["max_viewers"] == 64 and stats["rss_mb"] > 0
    (stream,) = stats["streams"]
    for key in ("fps_generated", "fps_target", "frames", "seed", "speed", "paused", "late_ticks"):
        assert key in stream, key
    (viewer,) = stream["viewers"]
    assert viewer["kind"] == "websocket" and viewer["sent"] >= 5 and {"dropped", "buffered"} <= set(viewer)


def test_mjpeg_and_a_socket_closed_mid_frame(runs):
    with running([runs["duralava"]]) as (server, url):
        port = server.port
        with raw_connect(port, f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", 1 << 16) as s:
            data = b""
            while data.count(b"\xff\xd9") < 2:
                data += s.recv(4096)
        assert b"multipart/x-mixed-replace; boundary=frame" in data
        start = data.index(b"\xff\xd8")
        assert Image.open(io.BytesIO(data[start:data.index(b"\xff\xd9", start) + 2])).size == (16, 16)
        for path in ("/stream.mjpg", "/ws/0"):  # hang up hard (RST) part-way through a frame
            s = raw_connect(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n" if path != "/ws/0"
                            else ws_request(port, path))
            s.recv(200)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

        async def go():
            while server.viewers:  # both are forgotten
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as sess, sess.ws_connect(url + "/ws/0") as ws:
                return (await next_frame(ws)).size
        assert run_async(go()) == (16, 16)  # the stream runs on


@pytest.mark.parametrize("argv, words", [
    (["--port", "70000"], ["--port"]),
    (["--allow-host", "bad name!"], ["--allow-host"]),
    (["--max-viewers", "0"], ["--max-viewers"]),
    (["--fps", "0"], ["--fps"]),
])
def test_bad_flags_are_one_line(runs, capsys, argv, words):
    from everloop.cli import main
    try:
        code = main(["serve", runs["duralava"], "--port", "0", *argv])
    except SystemExit as e:
        code = e.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err


def test_missing_run_seed_clip_and_busy_port_are_one_line(runs, tmp_path, capsys):
    from everloop.cli import main
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = [(["serve", str(tmp_path / "nope"), "--port", "0"], "nope"),
                 (["serve", runs["multiscale"], "--port", "0"], "--seed-clip"),
                 (["serve", runs["duralava"], "--port", str(busy.getsockname()[1])], "--port")]
        for argv, word in cases:
            assert main(argv) == 2, argv
            err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert len(err) == 1 and word in err[0], err


def test_without_aiohttp_serve_and_live_web_say_what_to_install(runs, capsys, monkeypatch):
    from everloop.cli import main
    monkeypatch.setattr(srv, "web", None)  # as if aiohttp were not installed
    for argv in (["serve", runs["duralava"], "--port", "0"], ["live", runs["duralava"], "--web", "8000"]):
        assert main(argv) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "pip install 'everloop[serve]'" in err[0], err


@pytest.mark.parametrize("command, sig", [("serve", signal.SIGINT), ("live", signal.SIGTERM)])
def test_stops_cleanly_on_a_signal(runs, command, sig):
    """`everloop serve` and `everloop live --web` (the same server) with a viewer attached."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["serve", runs["duralava"], "--port", str(port)] if command == "serve" else \
        ["live", runs["duralava"], "--web", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "everloop.cli", *argv, "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving http://127.0.0.1:" in proc.stdout.readline()
        viewer = raw_connect(port, f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n", 1 << 16)
        assert viewer.recv(100).startswith(b"HTTP/1.1 200")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped after" in out and "Traceback" not in err
        viewer.settimeout(10)
        while viewer.recv(65536):  # the viewer's connection ends too
            pass
        viewer.close()
    finally:
        if proc.poll() is None:
            proc.kill()
