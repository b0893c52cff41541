"""The admin dashboard: refused to anonymous users (redirected to the admin login), rendered for
a merchandiser with its figures, SVG chart and tables; and in real headless Chromium."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from analytics.alerts import alerts_evaluate
from inventory.snapshots import snapshot_take
from tests.analytics.conftest import receive, sell
from tests.live.test_storefront import browser, chromium, click_and_wait  # noqa: F401 (fixtures)


@pytest.fixture
def merchandiser(admin_groups):
    user = User.objects.create_user("merch", password="pw-merch-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Merchandisers"))
    return user


def seed(sku, location):
    """Sales in the last days, a snapshot an hour ago and one now, an open low-stock alert."""
    now = timezone.now()
    sku.reorder_point = 50
    sku.save(update_fields=["reorder_point"])
    receive(sku, location, 40, at=now - timedelta(days=2))
    snapshot_take(now=now - timedelta(hours=1))
    sell(sku, location, 12, at=now - timedelta(days=1))
    snapshot_take(now=now)
    alerts_evaluate()


def test_anonymous_users_are_sent_to_the_login(client, db):
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_non_staff_users_are_refused(client, db):
    user = User.objects.create_user("shopper", password="pw")
    client.force_login(user)
    response = client.get("/admin/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_dashboard_renders_figures_chart_and_tables(client, merchandiser, sku, location):
    seed(sku, location)
    client.force_login(merchandiser)
    response = client.get("/admin/dashboard/?sku=SKU-1")
    assert response.status_code == 200
    html = response.content.decode()
    assert response.context["figures"]["low_stock"] == 1
    assert '<svg id="history-chart"' in html and 'class="on-hand"' in html
    assert response.context["chart"]["last"]["on_hand"] == 28
    assert "SKU-1" in html and "Low stock" in html
    assert response.context["fast_movers"][0]["units"] == 12
    assert "<script" not in html.split('id="dashboard"')[1]  # the chart needs no JavaScript
    outside = html.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace is a name, not a fetch
    assert "http://" not in outside and "https://" not in outside  # no CDN
    # linked from the admin home
    assert 'id="dashboard-link"' in client.get("/admin/").content.decode()
    # an unknown SKU is a message, not an error
    assert "Unknown SKU" in client.get("/admin/dashboard/?sku=NOPE").content.decode()


@pytest.mark.django_db(transaction=True)
def test_dashboard_in_headless_chromium(live_server, browser, sku, location, admin_groups):  # noqa: F811
    from selenium.webdriver.common.by import By

    User.objects.create_user("merch2", password="pw-merch-123", is_staff=True).groups.add(
        Group.objects.get(name="Merchandisers"))
    seed(sku, location)
    # anonymous: the login page, not the dashboard
    browser.get(f"{live_server.url}/admin/dashboard/")
    assert "/admin/login/" in browser.current_url
    assert not browser.find_elements(By.ID, "dashboard")
    # log in as a merchandiser, land on the dashboard
    browser.find_element(By.NAME, "username").send_keys("merch2")
    browser.find_element(By.NAME, "password").send_keys("pw-merch-123")
    click_and_wait(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))
    assert browser.current_url.endswith("/admin/dashboard/")
    assert browser.find_element(By.CSS_SELECTOR, "#fig-low-stock .value").text == "1"
    chart = browser.find_element(By.ID, "history-chart")
    assert chart.size["width"] > 100 and chart.size["height"] > 50  # really drawn
    assert browser.find_element(By.CSS_SELECTOR, "#history-chart polyline.on-hand").get_attribute("points")
    assert "SKU-1" in browser.find_element(By.ID, "fast-movers").text
    assert "Low stock" in browser.find_element(By.ID, "open-alerts").text
    # the admin home links to it
    browser.get(f"{live_server.url}/admin/")
    click_and_wait(browser, browser.find_element(By.ID, "dashboard-link"))
    assert browser.find_element(By.ID, "dashboard")
