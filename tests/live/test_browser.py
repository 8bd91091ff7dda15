"""The demo page and the docs in real headless Chromium, against the real server, with the network cut off."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests import chromium, service
from tests.conftest import Photo

WAIT_S = 60


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> service.Service:
    chromium.require_chromium()  # before a server is started for nothing
    return request.getfixturevalue("live_server")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def browser(server: service.Service) -> Iterator[webdriver.Chrome]:
    with chromium.browser() as driver:
        yield driver


@pytest.fixture(scope="module")
def photo(photos: list[Photo]) -> Photo:
    return photos[0]


def api_answer(server: service.Service, path: Path) -> dict[str, Any]:
    response = requests.post(f"{server.url}/classify?topk=5", files={"image": (path.name, path.read_bytes())}, timeout=60)
    return response.json()  # type: ignore[no-any-return]


def resources_loaded(driver: webdriver.Chrome) -> list[str]:
    return driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")  # type: ignore[no-any-return]


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """Errors the page logged: failed loads, blocked by the Content-Security-Policy, script errors."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def read_bars(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Each prediction as the page shows it: label, the percentage text, and how full its bar is drawn."""
    script = """
      return [...document.querySelectorAll('#predictions li')].map(item => ({
        label: item.querySelector('.label').textContent,
        percent: item.querySelector('.percent').textContent,
        fill: item.querySelector('.fill').getBoundingClientRect().width / item.querySelector('.bar').getBoundingClientRect().width,
      }));
    """
    return driver.execute_script(script)  # type: ignore[no-any-return]


def open_page(driver: webdriver.Chrome, url: str) -> None:
    driver.get_log("browser")  # forget what earlier pages logged
    driver.get(url)


def upload_on_demo_page(driver: webdriver.Chrome, server: service.Service, path: Path) -> None:
    open_page(driver, f"{server.url}/")
    driver.find_element(By.ID, "photo").send_keys(str(path))


def test_demo_page_shows_a_photos_top5_as_probability_bars(browser: webdriver.Chrome, server: service.Service, photo: Photo) -> None:
    upload_on_demo_page(browser, server, photo.path)
    WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#predictions li")) == 5)
    bars = read_bars(browser)
    expected = api_answer(server, photo.path)["predictions"]
    assert [bar["label"] for bar in bars] == [p["label"] for p in expected]
    for bar, prediction in zip(bars, expected, strict=True):
        assert bar["fill"] == pytest.approx(prediction["probability"], abs=0.005)
        assert bar["percent"].endswith("%")
        assert float(bar["percent"].rstrip("%")) == pytest.approx(prediction["probability"] * 100, abs=0.05)
    assert (browser.find_element(By.ID, "preview").get_attribute("src") or "").startswith("blob:")
    assert browser.find_element(By.ID, "error").is_displayed() is False
    assert all(url.startswith(server.url) or url.startswith("blob:") for url in resources_loaded(browser))
    assert console_errors(browser) == []


def test_demo_page_classifies_a_photo_dropped_on_it(browser: webdriver.Chrome, server: service.Service, photos: list[Photo]) -> None:
    photo = photos[1]
    open_page(browser, f"{server.url}/")
    # Selenium cannot drag from the desktop: hand a real File to the page, then drop it as a DataTransfer.
    browser.execute_script(
        "const input = document.createElement('input'); input.type = 'file'; input.id = 'carrier'; document.body.append(input);"
    )
    browser.find_element(By.ID, "carrier").send_keys(str(photo.path))
    browser.execute_script("""
      const transfer = new DataTransfer();
      transfer.items.add(document.getElementById('carrier').files[0]);
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
    """)
    WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#predictions li")) == 5)
    assert [bar["label"] for bar in read_bars(browser)] == [p["label"] for p in api_answer(server, photo.path)["predictions"]]
    assert browser.find_element(By.ID, "caption").text == photo.path.name


def test_demo_page_shows_the_answer_for_the_latest_photo_chosen(
    browser: webdriver.Chrome, server: service.Service, photo: Photo, tmp_path: Path
) -> None:
    # A slow photo (81 megapixels, seconds to decode), then at once a small one: the slow answer
    # arrived last and was drawn under the small photo's preview and name.
    slow = tmp_path / "slow.png"
    Image.new("RGB", (9000, 9000), "teal").save(slow)
    upload_on_demo_page(browser, server, slow)
    time.sleep(0.3)
    browser.find_element(By.ID, "photo").send_keys(str(photo.path))
    WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#predictions li")) == 5)
    started = time.monotonic()
    slow_answer = api_answer(server, slow)
    time.sleep(time.monotonic() - started + 1)  # past when the page's slow answer would have come
    shown = [float(bar["percent"].rstrip("%")) for bar in read_bars(browser)]
    expected = [p["probability"] * 100 for p in api_answer(server, photo.path)["predictions"]]
    assert shown == pytest.approx(expected, abs=0.05)
    assert shown != pytest.approx([p["probability"] * 100 for p in slow_answer["predictions"]], abs=0.05)
    assert browser.find_element(By.ID, "caption").text == photo.path.name


def test_demo_page_shows_the_services_error_plainly(browser: webdriver.Chrome, server: service.Service, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    upload_on_demo_page(browser, server, notes)
    error = browser.find_element(By.ID, "error")
    WebDriverWait(browser, WAIT_S).until(lambda d: error.is_displayed())
    assert error.text == api_answer(server, notes)["error"]["message"]
    assert browser.find_elements(By.CSS_SELECTOR, "#predictions li") == []
    assert not browser.find_element(By.ID, "result").is_displayed()  # no broken preview beside the message


def test_demo_page_fits_a_phone_screen(server: service.Service, photo: Photo) -> None:
    with chromium.browser(width=390, height=844) as phone:
        upload_on_demo_page(phone, server, photo.path)
        WebDriverWait(phone, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#predictions li")) == 5)
        assert phone.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scrolling
        bars = phone.find_elements(By.CSS_SELECTOR, "#predictions .bar")
        assert all(bar.size["width"] > 250 for bar in bars)  # full width, stacked under the photo
        assert phone.find_element(By.ID, "drop").size["height"] >= 44  # a comfortable tap target


def test_docs_list_every_operation_and_load_nothing_from_elsewhere(browser: webdriver.Chrome, server: service.Service) -> None:
    open_page(browser, f"{server.url}/docs")
    document = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    expected = {f"{method.upper()} {path}" for path, operations in document["paths"].items() for method in operations}
    WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary")) == len(expected))
    shown = {
        f"{block.find_element(By.CSS_SELECTOR, '.opblock-summary-method').text} "
        f"{block.find_element(By.CSS_SELECTOR, '.opblock-summary-path').get_attribute('data-path')}"
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
    }
    assert shown == expected
    assert all(url.startswith(server.url) for url in resources_loaded(browser))
    assert console_errors(browser) == []


def test_docs_try_it_out_uploads_a_photo(browser: webdriver.Chrome, server: service.Service, photo: Photo) -> None:
    open_page(browser, f"{server.url}/docs/")
    operation = WebDriverWait(browser, WAIT_S).until(lambda d: d.find_element(By.ID, "operations-default-classify"))
    if not operation.find_elements(By.CSS_SELECTOR, "input[type=file]"):
        operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()  # unfold it, as a person would
    inputs = WebDriverWait(browser, WAIT_S).until(lambda d: operation.find_elements(By.CSS_SELECTOR, "input[type=file]"))
    inputs[0].send_keys(str(photo.path))  # the first `image` file
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status")
    )
    assert status.text.strip() == "200"
    body = json.loads(operation.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .microlight").text)
    assert body["filename"] == photo.path.name
    assert body["predictions"] == api_answer(server, photo.path)["predictions"]
