"""`everloop serve` of an action-conditioned run: a game per browser, keys over a real
loopback WebSocket (the tiny dot game of test_play.py). No timing assertions."""
import asyncio
import contextlib
import io
import json

import pytest
import torch
from PIL import Image
from test_play import dot_run  # noqa: F401 (a fixture)
from test_serve import serving

aiohttp = pytest.importorskip("aiohttp")

from everloop import serve_play
from everloop.cli import main
from everloop.hosts import allowed_hosts
from everloop.play import Game

torch.set_num_threads(1)


@contextlib.contextmanager
def running(run, max_players=4, fps=60.0):
    """A real game server on 127.0.0.1:<free port> in a thread with its own event loop."""
    server = serve_play.GameServer(Game(run), "dots", fps, 0, max_players, allowed_hosts("127.0.0.1"))
    with serving(server) as url:
        yield server, url


async def frames(ws, n: int) -> list[Image.Image]:
    out = []
    while len(out) < n:
        msg = await ws.receive()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        if msg.type == aiohttp.WSMsgType.BINARY:
            out.append(Image.open(io.BytesIO(msg.data)))
    return out


def test_each_browser_plays_its_own_game_with_its_keys(dot_run, monkeypatch):  # noqa: F811
    seen: list[tuple[int, int]] = []  # (player seed, action) of every model step
    step = Game.step

    def spy(self, action):
        seen.append((int(self.generator.initial_seed()), action))
        return step(self, action)
    monkeypatch.setattr(Game, "step", spy)
    with running(dot_run) as (_, url):
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.get(url + "/") as r:
                    assert r.status == 200 and "keys" in await r.text()
                async with s.ws_connect(url + "/ws") as a, s.ws_connect(url + "/ws") as b:
                    hello = [json.loads((await ws.receive()).data) for ws in (a, b)]
                    assert [h["seed"] for h in hello] == [0, 1]
                    assert hello[0]["meanings"][2] == "RIGHT" and (hello[0]["width"], hello[0]["height"]) == (16, 32)
                    first = (await frames(a, 1))[0]
                    assert first.size == (16, 16)
                    await a.send_str(json.dumps({"keys": ["RIGHT"]}))
                    await b.send_str(json.dumps({"keys": ["LEFT", "UP"]}))  # no UPLEFT here: UP (play.action_for)
                    await a.send_str("not json")
                    while True:  # the error comes back among the frames
                        msg = await a.receive()
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            assert "keys" in json.loads(msg.data)["error"]
                            break
                    await frames(a, 8)
                    await frames(b, 8)
                    await a.send_str(json.dumps({"keys": []}))
                    await frames(a, 4)
                    stats = await (await s.get(url + "/stats")).json()
                    assert len(stats["players"]) == 2
        asyncio.run(asyncio.wait_for(go(), 120))
    meanings = Game(dot_run).meanings
    assert (0, meanings.index("RIGHT")) in seen and (1, meanings.index("UP")) in seen
    assert (1, meanings.index("RIGHT")) not in seen  # one player's keys never reach another's game
    assert (0, 0) in seen  # keys let go: NOOP


def test_restart_cap_and_host_check(dot_run):  # noqa: F811
    with running(dot_run, max_players=1) as (_, url):
        async def go():
            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(url + "/ws") as a:
                    await a.receive()  # hello
                    await frames(a, 3)
                    await a.send_str(json.dumps({"restart": True}))
                    await frames(a, 2)
                    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                        await s.ws_connect(url + "/ws")
                    assert e.value.status == 503
                async with s.get(url + "/", headers={"Host": "evil.example"}) as r:
                    assert r.status == 403
        asyncio.run(asyncio.wait_for(go(), 120))


def test_serve_sends_a_game_run_to_the_game_server(dot_run, tiny_run, capsys):  # noqa: F811
    assert serve_play.takes_actions(dot_run) and not serve_play.takes_actions(tiny_run)
    code = main(["serve", str(dot_run), str(dot_run), "--port", "0"])
    assert code == 2 and "served alone" in capsys.readouterr().err
    msg = serve_play.Player(Game(dot_run), 0)
    for bad in ('{"keys": "UP"}', '{"keys": ["JUMP"]}', '{"restart": false}', '{"speed": 2}', "[]"):
        with pytest.raises(ValueError):
            msg.read(bad)
    msg.read('{"keys": ["UP", "FIRE"]}')
    assert msg.held == {"UP", "FIRE"}


def test_the_play_page_sends_the_keys_held_in_a_real_browser(dot_run, monkeypatch, tmp_path):  # noqa: F811
    """Headless Chromium (as tests/test_serve_browser.py): frames are drawn at the native
    screen's shape, and an arrow key held down on the page steers the game."""
    import os
    import shutil
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium, driver_bin = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (chromium and driver_bin):
        pytest.skip("no Chromium here (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from test_serve_browser import wait_for
    actions: list[int] = []
    step = Game.step
    monkeypatch.setattr(Game, "step", lambda self, a: (actions.append(a), step(self, a))[1])
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--window-size=480,640",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    with running(dot_run, fps=30.0) as (_, url):
        driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            driver.set_page_load_timeout(60)
            driver.get(url + "/")
            wait_for(lambda: driver.execute_script("return window.everloopFrames || 0") > 2, "frames drawn")
            w, h = driver.execute_script("const c = document.getElementById('view');"
                                         " return [c.clientWidth, c.clientHeight]")
            assert abs(h / w - 2.0) < 0.05  # the dot game's native screen is 16x32
            ActionChains(driver).key_down(Keys.ARROW_RIGHT).perform()
            right = Game(dot_run).meanings.index("RIGHT")
            wait_for(lambda: actions.count(right) >= 3, "RIGHT reaching the game")
            ActionChains(driver).key_up(Keys.ARROW_RIGHT).perform()
            n = len(actions)
            wait_for(lambda: len(actions) > n + 3 and actions[-1] == 0, "NOOP once the key is up")
            shot = os.environ.get("EVERLOOP_SCREENSHOT") or str(tmp_path / "play.png")
            assert driver.save_screenshot(shot)
        finally:
            driver.quit()
