"""The playground at ``/`` in a real browser: headless Debian Chromium (Selenium and chromium-driver) loads it,
submits a prompt and sees tokens stream in, each with its probability for the hover tip.

``LMLAB_PLAYGROUND_SCREENSHOT=PATH`` also saves a screenshot there (docs/serve-playground.png is made so).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.serving import running_server, tiny_run

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

DRIVER = shutil.which("chromedriver")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (in lmlab[test])")
    if not (DRIVER and BROWSER):
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1100,760"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_playground_streams_tokens_with_probabilities(tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server(tiny_run(tmp_path / "run", block=256), "--model-name", "tiny") as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: "tiny" in b.find_element(By.ID, "model").text)
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("the cat sat on")
        for field, value in (("max_tokens", "24"), ("temperature", "0.9"), ("seed", "4")):
            box = browser.find_element(By.ID, field)
            box.clear()
            box.send_keys(value)
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: "finished" in b.find_element(By.ID, "status").text)
        tokens = browser.find_elements(By.CSS_SELECTOR, "#output .tok")
        assert len(tokens) == 24 or "finished: stop" in browser.find_element(By.ID, "status").text
        assert tokens and all(0 < float(t.get_attribute("data-prob")) <= 1 for t in tokens)
        assert browser.find_element(By.CSS_SELECTOR, "#output .prompt").text == "the cat sat on"
        assert "tokens in" in browser.find_element(By.ID, "status").text
        streamed = "".join(t.get_attribute("textContent") for t in tokens)
        assert streamed.strip() and browser.find_element(By.ID, "output").text.startswith("the cat sat on")
        # hovering a token shows its probability and the alternatives
        from selenium.webdriver import ActionChains

        visible = [t for t in tokens if t.get_attribute("textContent").strip()]  # the end token shows no text
        ActionChains(browser).move_to_element(visible[min(3, len(visible) - 1)]).perform()
        tip = browser.find_element(By.ID, "tip")
        wait.until(lambda b: tip.is_displayed())
        assert "p = " in tip.text
        if os.environ.get("LMLAB_PLAYGROUND_SCREENSHOT"):
            browser.save_screenshot(os.environ["LMLAB_PLAYGROUND_SCREENSHOT"])
