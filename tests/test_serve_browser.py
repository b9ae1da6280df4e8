"""The page of `everloop serve` in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium opens it, counts the frames it draws in 5 s, moves
the temperature slider and clicks New stream and sees the server's stream change, and
saves a screenshot (to $EVERLOOP_SCREENSHOT if set: docs/serve-screenshot.png is made so).
Skips, saying why, where Selenium or Chromium is missing."""
import os
import shutil
import time

import pytest

pytest.importorskip("aiohttp")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
from test_serve import running, tiny_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tiny_runs(tmp_path_factory)


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no Chromium here (apt-get install chromium chromium-driver)")
def test_the_page_plays_and_its_controls_act(runs, tmp_path):
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-proxy-server", "--window-size=640,480",
                "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    with running([runs["worldmodel"], runs["duralava"]], fps=30) as (server, url):
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        try:
            driver.set_page_load_timeout(60)
            driver.get(url + "/")
            frames = lambda: driver.execute_script("return window.everloopFrames || 0")
            wait_for(lambda: frames() > 0, "the first frame drawn")
            start = frames()
            time.sleep(5)
            drawn = frames() - start
            print(f"frames drawn in 5 s: {drawn}")
            assert drawn > 0
            assert driver.execute_script("return [document.getElementById('view').width,"
                                         " document.getElementById('view').height]") == [16, 16]
            assert driver.find_element(By.ID, "runs").is_displayed()  # two runs: a menu
            producer = server.producers[0]
            driver.execute_script("const t = document.getElementById('tau'); t.value = '0.3';"
                                  "t.dispatchEvent(new Event('change'));")
            wait_for(lambda: producer.model.temperature == 0.3, "the temperature reaching the stream")
            seed = producer.seed
            driver.find_element(By.ID, "new").click()
            wait_for(lambda: producer.seed != seed, "a new seed")
            wait_for(lambda: driver.find_element(By.ID, "seed").text == str(producer.seed), "the page showing it")
            before = frames()
            wait_for(lambda: frames() > before, "frames of the new stream")
            shot = os.environ.get("EVERLOOP_SCREENSHOT") or str(tmp_path / "serve.png")
            driver.set_window_size(640, 480)
            assert driver.save_screenshot(shot)
        finally:
            driver.quit()


def wait_for(check, what: str, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < end, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.1)
