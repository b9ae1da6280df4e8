"""`everloop serve RUN` for an action-conditioned run: a game per browser (docs/play.md).

serve.py broadcasts one dream that every viewer watches; a game is steered by its player,
so here each WebSocket gets its own: the same model and data as `everloop play` (play.Game),
its own state and random streams (seed --seed + the players before it). The page sends
the keys it holds as JSON each time they change ({"keys": ["UP", "LEFT"]}) and
{"restart": true} for R; at every tick of the recording's rate the server steps that
player's game with the keys held then (none: NOOP) and sends the frame as JPEG. The
first message is the game's description ({"game", "meanings", "fps", "seed", "width",
"height"}: the native screen's shape, which the page scales the frame to).

Every game's model step runs on one worker thread, in turn: on a 2-core machine a second
thread only contends. The Ms. Pac-Man model steps 19-37 times a second at batch 1 there
(BENCHMARKS.md, under more or less load), so one player at 15 steps/s always fits and a
second on free cores; past that every game slows down, none drops keys. --max-viewers caps
the players (past it: HTTP 503)."""
from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import json
import time
from importlib import resources

import numpy as np
import torch

from .hosts import allowed_hosts, host_refusal
from .live import encode_jpeg
from .play import KEYS, Game, action_for

STALL_S = 60.0  # a player whose socket takes no frame for this long is dropped


def takes_actions(run) -> bool:
    """Whether RUN's model is steered by actions (its config has n_actions > 0)."""
    from .checkpoint import read_json_config
    return int((read_json_config(run).get("config") or {}).get("n_actions", 0) or 0) > 0


class Player:
    """One browser's game: a shallow copy of the served Game (the model and the data are
    shared, read only) with its own state, random streams and keys."""

    def __init__(self, game: Game, seed: int):
        self.game = copy.copy(game)
        self.game.rng, self.game.generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        self.seed, self.held, self.restart, self.steps = seed, set(), True, 0

    def read(self, text: str) -> None:
        """Apply a message from the page; ValueError names what is wrong with it."""
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not msg or set(msg) - {"keys", "restart"}:
            raise ValueError('a message is a JSON object with "keys" (a list of key names) and/or "restart": true')
        keys = msg.get("keys", [])
        if not isinstance(keys, list) or not all(isinstance(k, str) and k in KEYS for k in keys):
            raise ValueError(f"keys: a list of some of {sorted(KEYS)}")
        if "restart" in msg and msg["restart"] is not True:
            raise ValueError("restart: true")
        if "keys" in msg:
            self.held = set(keys)
        self.restart = self.restart or "restart" in msg


class GameServer:
    """The aiohttp application: the page, /stats and a WebSocket per player."""

    def __init__(self, game: Game, name: str, fps: float, seed: int, max_players: int, hosts: set[str],
                 quality: int = 90):
        self.game, self.name, self.fps, self.seed, self.quality = game, name, fps, seed, quality
        self.max_players, self.hosts, self.joined = max_players, hosts, 0
        self.players: set[Player] = set()
        self.sockets: set = set()
        self.worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="everloop-play")
        self.page = resources.files("everloop").joinpath("assets/play.html").read_bytes()
        self.started, self.port, self.loop, self.stop = time.monotonic(), None, None, None

    def describe(self) -> str:
        return f"{self.name}: a game per browser, keys over the WebSocket"

    def app(self):
        from aiohttp import web
        app = web.Application(middlewares=[web.middleware(
            lambda request, handler: self._host_check(request, handler))])
        app.router.add_get("/", self.index)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/ws", self.websocket)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _host_check(self, request, handler):
        return host_refusal(request, self.hosts) or await handler(request)

    async def _shutdown(self, app) -> None:
        from .serve import close_sockets
        await close_sockets(self.sockets)

    async def _cleanup(self, app) -> None:
        await asyncio.to_thread(self.worker.shutdown, True)

    def hello(self, player: Player) -> dict:
        width, height = self.game.display_size(1)
        return {"game": self.name, "meanings": self.game.meanings, "fps": self.fps, "seed": player.seed,
                "width": width, "height": height}

    async def index(self, request):
        from aiohttp import web
        return web.Response(body=self.page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def stats(self, request):
        from aiohttp import web
        return web.json_response({"uptime_s": round(time.monotonic() - self.started, 1), "fps_target": self.fps,
                                  "max_players": self.max_players,
                                  "players": [{"seed": p.seed, "steps": p.steps} for p in self.players]})

    async def websocket(self, request):
        from aiohttp import web
        if len(self.players) >= self.max_players:  # counted and joined with no await between
            raise web.HTTPServiceUnavailable(text=f"everloop: {self.max_players} players already (--max-viewers)\n")
        player = Player(self.game, self.seed + self.joined)
        self.joined += 1
        self.players.add(player)
        ws, ticker = web.WebSocketResponse(max_msg_size=4096, compress=False), None
        try:
            await ws.prepare(request)
            self.sockets.add(ws)
            await ws.send_str(json.dumps(self.hello(player)))
            ticker = asyncio.create_task(self._play(ws, player))
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    try:
                        player.read(msg.data)
                    except ValueError as e:
                        await ws.send_str(json.dumps({"error": str(e)}))
        finally:
            if ticker:
                ticker.cancel()
            self.players.discard(player)
            self.sockets.discard(ws)
        return ws

    async def _play(self, ws, player: Player) -> None:
        """A tick per 1 / fps s: step the game with the keys held, send the frame. A clock, not
        a sleep after the work; if the game falls behind, the clock restarts (no burst)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not ws.closed:
                if player.restart:
                    player.restart = False
                    frame = await loop.run_in_executor(self.worker, player.game.restart)
                else:
                    action = action_for(player.held, player.game.meanings)
                    frame = await loop.run_in_executor(self.worker, player.game.step, action)
                    player.steps += 1
                await asyncio.wait_for(ws.send_bytes(encode_jpeg(frame, self.quality)), STALL_S)
                next_at += 1.0 / self.fps
                if next_at - loop.time() < -1.0 / self.fps:
                    next_at = loop.time()
                await asyncio.sleep(max(next_at - loop.time(), 0))
        except TimeoutError:
            await ws.close()  # stalled for STALL_S
        except (ConnectionError, RuntimeError):
            pass  # the tab was closed


def serve_games(a) -> None:
    """`everloop serve RUN` where RUN takes actions (cmd_serve hands it here)."""
    from .errors import EverloopError
    from .serve import _run
    if len(a.runs) != 1:
        raise EverloopError("serve: a run that takes actions (a game) is served alone; give one RUN")
    if a.threads:
        torch.set_num_threads(a.threads)
    game = Game(a.runs[0], None, a.device, a.seed)
    server = GameServer(game, str(a.runs[0]), a.fps or game.store.fps, a.seed, a.max_viewers,
                        allowed_hosts(a.host, a.allow_host), a.quality)
    asyncio.run(_run(server, a.host, a.port, "--port"))
    print("stopped")
