"""/storefront/ in real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
Selenium with the system driver: nothing is downloaded): a change pushed by a marketplace
webhook shows without a reload, and "Buy one" reserves and commits a unit through the API."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests

from channels.adapters.signing import standard_webhooks_sign
from inventory import services
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _install_chromium() -> str | None:
    """apt-get install chromium chromium-driver when missing; the reason when impossible."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine to install Debian's chromium and chromium-driver"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                return f"apt-get could not install chromium: {result.stderr[-500:]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get could not install chromium: {exc}"
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "chromium or chromedriver still missing after apt-get install"
    return None


@pytest.fixture(scope="session")
def chromium():
    reason = _install_chromium()
    if reason:
        pytest.skip(reason)
    return CHROMIUM


def click_and_wait(driver, element) -> None:
    """Click something that loads a new page (a form's submit, a link) and wait for that page: a
    loaded machine answers slowly, and reading the old page would make a test flaky."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(expected_conditions.staleness_of(page))
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")


@pytest.fixture
def browser(chromium):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never try to download a driver
    options = Options()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def shown(browser, code: str) -> str:
    from selenium.webdriver.common.by import By

    card = browser.find_element(By.CSS_SELECTOR, f'[data-sku="{code}"]')
    return card.find_element(By.CSS_SELECTOR, '[data-field="available"]').text


def wait_until(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def webhook_sale(base: str, channel, *, sku: str, location: str, quantity: int) -> None:
    """A Standard Webhooks delivery of a canonical sale, signed with the channel's secret."""
    body = json.dumps({"events": [{"event_id": f"store-{uuid.uuid4()}", "type": "sale", "sku": sku,
                                   "location": location, "quantity": quantity,
                                   "occurred_at": datetime.now(UTC).isoformat()}]}).encode()
    msg_id, ts = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    answer = requests.post(f"{base}/webhooks/{channel.slug}/", data=body, timeout=10, headers={
        "Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": ts,
        "webhook-signature": standard_webhooks_sign(channel.webhook_secret, msg_id, ts, body)})
    assert answer.status_code == 200, answer.text


def test_storefront_shows_webhook_changes_live_and_buys_through_the_api(asgi_server, browser,
                                                                       celery_worker_process):
    from selenium.webdriver.common.by import By

    from channels.services import channel_create
    from reservations.models import Reservation

    # given: a SKU with 20 units and a marketplace (Standard Webhooks kind) selling it
    location = LocationFactory(code="store-wh")
    sku = SkuFactory(code="STORE-TEE", name="Storefront tee")
    services.stock_receive(sku=sku.code, location=location.code, quantity=20)
    channel = channel_create(slug="store-hooks", name="Store hooks", kind="webhook", base_url="http://127.0.0.1:9",
                             webhook_secret="whsec_" + base64.b64encode(os.urandom(24)).decode(),
                             default_location=location, push_enabled=False)

    # when: the page is open (demo mode: it carries its keys) and shows the current quantity
    browser.get(f"{asgi_server}/storefront/?sku={sku.code}")
    assert browser.find_element(By.TAG_NAME, "h2").text == "Storefront tee"
    wait_until(lambda: shown(browser, sku.code) == "20", 15, "the initial quantity")
    browser.execute_script("window.__notReloaded = true")

    # then: a marketplace sale arriving by webhook shows without a reload
    webhook_sale(asgi_server, channel, sku=sku.code, location=location.code, quantity=3)
    wait_until(lambda: shown(browser, sku.code) == "17", 30, "the webhook's sale on the page")
    assert browser.execute_script("return window.__notReloaded") is True

    # and "Buy one" reserves and commits one unit through the public API, and the page shows it
    browser.find_element(By.CSS_SELECTOR, f'[data-buy="{sku.code}"]').click()
    wait_until(lambda: shown(browser, sku.code) == "16", 15, "the purchase on the page")
    wait_until(lambda: Reservation.objects.filter(status="committed").count() == 1, 10, "a committed reservation")
    assert browser.execute_script("return window.__notReloaded") is True
    log = browser.find_element(By.ID, "log").text
    assert "Bought one STORE-TEE" in log


def test_storefront_serves_no_key_outside_demo_mode(client, settings, tmp_path):
    # given: demo mode off (the default, and in the image)
    settings.DEMO_MODE = False
    settings.DATA_DIR = tmp_path
    SkuFactory(code="TSHIRT-BLK-M", name="T-shirt black M")

    # when
    page = client.get("/storefront/")

    # then: the page renders the SKUs, asks for keys, holds none, and no key was made
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-read-key=""' in html and 'data-write-key=""' in html
    assert 'id="keys"' in html and "TSHIRT-BLK-M" in html
    assert not (tmp_path / "storefront-keys.json").exists()


def test_demo_keys_have_one_scope_each_and_are_made_again_when_revoked(settings, tmp_path):
    from core.auth import api_key_from_token
    from core.models import ApiKey
    from live.demo import storefront_keys

    settings.DATA_DIR = tmp_path
    first = storefront_keys()
    assert api_key_from_token(first.read).scopes == ["stock:read"]
    assert api_key_from_token(first.write).scopes == ["reservations:write"]
    assert storefront_keys() == first  # kept across calls (and restarts: the file, mode 0600)
    assert oct((tmp_path / "storefront-keys.json").stat().st_mode & 0o777) == "0o600"
    ApiKey.objects.filter(prefix=first.read.split("_")[1]).update(active=False)
    second = storefront_keys()
    assert second != first and api_key_from_token(second.read) is not None
    assert api_key_from_token(first.write) is None  # the old pair is revoked together
