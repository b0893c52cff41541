"""Bundles in the Django admin: the add form takes the components as text ("MUG x2, TEA x1") and
creates through `sku_create(components=...)`; the service's refusals are shown on the form and
nothing is written; a bundle's page shows its components (read-only, linked) and its availability
per location derived from them (as GET /api/v1/stock/{sku}/); the SKU list says which SKUs are
bundles. Through Django's test client, and in real headless Chromium."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from inventory import selectors
from inventory import services as stock
from inventory.admin import components_parse
from inventory.models import BundleComponent, Sku, StockPosition
from reservations import services as reservations
from tests.admin_forms import admin_post
from tests.factories import LocationFactory, SkuFactory
from tests.live.test_storefront import browser, chromium, click_and_wait  # noqa: F401 (fixtures)

ADD = "admin:inventory_sku_add"


def stock_two_components():
    """MUG and TEA at wh (7, 10) and store (4, 1); GIFT = 2 x MUG + 1 x TEA would make 3 + 1."""
    LocationFactory(code="wh", priority=10)
    LocationFactory(code="store", priority=20)
    SkuFactory(code="MUG", name="Mug")
    SkuFactory(code="TEA", name="Tea")
    for sku, location, quantity in [("MUG", "wh", 7), ("TEA", "wh", 10), ("MUG", "store", 4), ("TEA", "store", 1)]:
        stock.stock_receive(sku=sku, location=location, quantity=quantity)


def merchandiser(username: str) -> User:
    """A staff user with the SKU permissions a merchandiser has (given directly: a transactional
    test's flush removes the groups the data migration made)."""
    user = User.objects.create_user(username, password="pw-merch-123", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="inventory",
                                                         codename__in=["add_sku", "change_sku", "view_sku"]))
    return user


def change_url(sku: Sku) -> str:
    return reverse("admin:inventory_sku_change", args=[sku.pk])


# ------------------------------------------------------------------------------ the text field


@pytest.mark.parametrize(("text", "parsed"), [
    ("MUG x2, TEA x1", [{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1}]),
    ("MUG x 2\nTEA", [{"sku": "MUG", "quantity": 2}, {"sku": "TEA", "quantity": 1}]),
    ("  MUG*3 ,, TEA \u00d7 4 ,", [{"sku": "MUG", "quantity": 3}, {"sku": "TEA", "quantity": 4}]),
    ("BOX2, FX2 X3, GIFT BOX x 2", [{"sku": "BOX2", "quantity": 1}, {"sku": "FX2", "quantity": 3},
                                   {"sku": "GIFT BOX", "quantity": 2}]),
    ("", []),
])
def test_components_text_is_read_as_codes_and_units(text, parsed):
    assert components_parse(text) == parsed


@pytest.mark.parametrize("text", ["MUG x0", "MUG x 1000000001", "MUG x " + "9" * 5000])
def test_a_quantity_out_of_range_is_refused_by_the_form(text):
    from django import forms

    with pytest.raises(forms.ValidationError):
        components_parse(text)


# ------------------------------------------------------------------------------ test client


@pytest.mark.django_db
def test_a_bundle_created_in_the_admin_goes_through_the_service(admin_client):
    stock_two_components()

    response = admin_post(admin_client, reverse(ADD), {"code": "GIFT", "name": "Gift set",
                                                       "components": "MUG x2, TEA x1"})

    assert response.status_code == 302, response.content.decode()[-3000:]
    gift = Sku.objects.get(code="GIFT")
    assert gift.is_bundle
    assert sorted(BundleComponent.objects.filter(bundle=gift).values_list("component__code", "quantity")) == [
        ("MUG", 2), ("TEA", 1)]
    assert not StockPosition.objects.filter(sku=gift).exists()
    assert selectors.stock_get(sku_code="GIFT")["available"] == 3 + 1
    # without components, the same form makes a plain SKU
    assert admin_post(admin_client, reverse(ADD), {"code": "CUP", "name": "Cup"}).status_code == 302
    assert Sku.objects.get(code="CUP").is_bundle is False


@pytest.mark.django_db
@pytest.mark.parametrize(("components", "error"), [
    ("NOPE x1", "sku_not_found: Unknown SKU &#x27;NOPE&#x27;."),
    ("GIFT x1", "invalid_components: &#x27;GIFT&#x27; is a bundle; a bundle cannot be a component."),
    ("NEW x1, MUG x1", "invalid_components: A bundle cannot contain itself (&#x27;NEW&#x27;)."),
    ("MUG x1, TEA, MUG x2", "invalid_components: Component &#x27;MUG&#x27; is listed twice"),
    ("MUG x0", "&#x27;MUG x0&#x27;: the quantity must be from 1 to"),
])
def test_a_refused_bundle_is_a_form_error_and_nothing_is_written(admin_client, components, error):
    stock_two_components()
    stock.sku_create(code="GIFT", name="Gift set", components=[{"sku": "MUG", "quantity": 2}])
    before = Sku.objects.count(), BundleComponent.objects.count()

    response = admin_post(admin_client, reverse(ADD), {"code": "NEW", "name": "New", "components": components})

    assert response.status_code == 200  # the form again, not a redirect
    html = response.content.decode()
    assert error in html
    form = response.context["adminform"].form
    assert list(form.errors) == ["components"]
    assert f"\n{components}</textarea>" in html  # what was typed is kept
    assert (Sku.objects.count(), BundleComponent.objects.count()) == before


@pytest.mark.django_db
def test_components_are_shown_not_editable_and_availability_is_derived(admin_client):
    stock_two_components()
    gift = stock.sku_create(code="GIFT", name="Gift set", components=[{"sku": "MUG", "quantity": 2},
                                                                      {"sku": "TEA", "quantity": 1}])
    reservations.reservation_create(lines=[{"sku": "GIFT", "quantity": 1, "location": "wh"}])

    page = admin_client.get(change_url(gift))

    assert page.status_code == 200
    html = page.content.decode()
    mug, tea = Sku.objects.get(code="MUG"), Sku.objects.get(code="TEA")
    assert f'2 &times; <a href="{change_url(mug)}">MUG</a>' in html
    assert f'1 &times; <a href="{change_url(tea)}">TEA</a>' in html
    assert 'name="components"' not in html  # set at creation, never edited here
    derived = selectors.stock_get(sku_code="GIFT")  # wh: 3 on hand, 1 reserved, 2 available; store: 1
    assert (derived["on_hand"], derived["reserved"], derived["available"]) == (4, 1, 3)
    for row in derived["locations"]:
        assert (f'<tr data-location="{row["location"]}"><td>{row["location"]}</td><td>{row["on_hand"]}</td>'
                f'<td>{row["reserved"]}</td><td>{row["available"]}</td></tr>') in html
    assert '<tr data-location="total"><th>total</th><th>4</th><th>1</th><th>3</th></tr>' in html
    assert "Latest movements" not in html  # a bundle has no positions or ledger rows of its own

    # other fields still save through the service; the components stay as they were
    response = admin_post(admin_client, change_url(gift), {"safety_stock": "2", "components": "TEA x9"})
    assert response.status_code == 302
    gift.refresh_from_db()
    assert gift.safety_stock == 2
    assert sorted(BundleComponent.objects.filter(bundle=gift).values_list("component__code", "quantity")) == [
        ("MUG", 2), ("TEA", 1)]

    # a component's page names the bundles it is in
    assert f'<a href="{change_url(gift)}">GIFT</a> (2 per bundle)' in admin_client.get(change_url(mug)).content.decode()


@pytest.mark.django_db
def test_the_sku_list_says_which_skus_are_bundles(admin_client):
    stock_two_components()
    stock.sku_create(code="GIFT", name="Gift set", components=[{"sku": "MUG", "quantity": 2}])
    url = reverse("admin:inventory_sku_changelist")

    page = admin_client.get(url)

    assert page.status_code == 200
    assert "column-is_bundle" in page.content.decode()
    only_bundles = admin_client.get(url, {"is_bundle__exact": "1"})
    assert [sku.code for sku in only_bundles.context["cl"].result_list] == ["GIFT"]


# ------------------------------------------------------------------------------ Chromium


def _log_in(driver, live_server, username: str, next_path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{live_server.url}/admin/login/?next={next_path}")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys("pw-merch-123")
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "input[type=submit]"))


@pytest.mark.django_db(transaction=True)
def test_a_merchandiser_creates_a_bundle_in_headless_chromium(live_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    stock_two_components()
    merchandiser("merch-b")
    add_path = reverse(ADD)
    _log_in(browser, live_server, "merch-b", add_path)
    assert browser.current_url.endswith(add_path)

    browser.find_element(By.NAME, "code").send_keys("GIFT")
    browser.find_element(By.NAME, "name").send_keys("Gift set")
    browser.find_element(By.NAME, "components").send_keys("MUG x2, TEA x1")
    # "Save and continue editing": the bundle's page
    click_and_wait(browser, browser.find_element(By.NAME, "_continue"))

    gift = Sku.objects.get(code="GIFT")
    assert browser.current_url.endswith(change_url(gift))
    components = browser.find_element(By.ID, "bundle-components")
    assert [li.text for li in components.find_elements(By.TAG_NAME, "li")] == ["2 × MUG Mug", "1 × TEA Tea"]
    links = {a.text: a.get_attribute("href") for a in components.find_elements(By.TAG_NAME, "a")}
    assert links["MUG"].endswith(change_url(Sku.objects.get(code="MUG")))
    table = browser.find_element(By.ID, "bundle-availability")
    assert table.is_displayed()
    rows = {tr.get_attribute("data-location"): [td.text for td in tr.find_elements(By.CSS_SELECTOR, "td, th")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tr[data-location]")}
    # wh: min(7 // 2, 10) = 3; store: min(4 // 2, 1) = 1
    assert rows == {"store": ["store", "1", "0", "1"], "wh": ["wh", "3", "0", "3"], "total": ["total", "4", "0", "4"]}
    assert not browser.find_elements(By.NAME, "components")  # not editable after creation

    # the SKU list marks it as a bundle
    browser.get(f"{live_server.url}{reverse('admin:inventory_sku_changelist')}")
    icons = {row.find_element(By.CSS_SELECTOR, "th.field-code").text:
             row.find_element(By.CSS_SELECTOR, "td.field-is_bundle img").get_attribute("alt")
             for row in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")}
    assert icons == {"GIFT": "True", "MUG": "False", "TEA": "False"}


@pytest.mark.django_db(transaction=True)
def test_a_refused_bundle_shows_the_services_error_in_headless_chromium(live_server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    stock_two_components()
    stock.sku_create(code="GIFT", name="Gift set", components=[{"sku": "MUG", "quantity": 2}])
    merchandiser("merch-c")
    add_path = reverse(ADD)
    _log_in(browser, live_server, "merch-c", add_path)

    browser.find_element(By.NAME, "code").send_keys("DUO")
    browser.find_element(By.NAME, "name").send_keys("Duo")
    browser.find_element(By.NAME, "components").send_keys("GIFT x1, NOPE x2")
    click_and_wait(browser, browser.find_element(By.NAME, "_save"))

    assert browser.current_url.endswith(add_path)  # still the add form
    errors = browser.find_element(By.CSS_SELECTOR, ".field-components .errorlist")
    assert errors.is_displayed()
    assert errors.text == "invalid_components: 'GIFT' is a bundle; a bundle cannot be a component."
    assert browser.find_element(By.NAME, "components").get_attribute("value") == "GIFT x1, NOPE x2"
    assert not Sku.objects.filter(code="DUO").exists()

    # fixed, it saves
    field = browser.find_element(By.NAME, "components")
    field.clear()
    field.send_keys("MUG x1, TEA x1")
    click_and_wait(browser, browser.find_element(By.NAME, "_save"))
    assert "/admin/inventory/sku/" in browser.current_url and not browser.current_url.endswith(add_path)
    assert sorted(BundleComponent.objects.filter(bundle__code="DUO").values_list("component__code", "quantity")) == [
        ("MUG", 1), ("TEA", 1)]
