"""Analytics (contract §4 "Analytics") on ledgers the tests build: units sold are sale and
reservation_commit rows by occurred_at; velocity over N days = units in the last N x 24 h / N;
cover, stockout date, reorder point and risk follow from it. Every answer is checked the same with
the daily-sales table empty, holding nothing recent, and holding everything."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics import selectors
from analytics.models import DailySales, SkuSalesWindow
from analytics.services import daily_sales_refresh
from inventory import services
from inventory.models import SOLD_TYPES, StockMovement
from reservations.services import reservation_commit, reservation_create
from tests.analytics.conftest import assert_error, receive, sell
from tests.factories import LocationFactory, SkuFactory

pytestmark = pytest.mark.django_db

REFRESHES = {
    "never refreshed": None,
    "refreshed now (recent rows read from the ledger)": timedelta(0),
    "refreshed an hour ahead (every row in the daily table)": timedelta(hours=1),
}


def refresh(how):
    if how is not None:
        daily_sales_refresh(now=timezone.now() + how)


@pytest.fixture
def known(location, other_location, now):
    """A SKU whose units sold are 5 (1 d), 10 (7 d) and 28 (28 d)."""
    sku = SkuFactory(code="V-1", safety_stock=2)
    receive(sku, location, 1000, at=now - timedelta(days=40))
    sell(sku, location, 2, at=now - timedelta(hours=2))
    sell(sku, location, 5, at=now - timedelta(days=3))
    sell(sku, location, 7, at=now - timedelta(days=10))
    sell(sku, location, 11, at=now - timedelta(days=27))
    sell(sku, location, 13, at=now - timedelta(days=30))  # outside every window
    held = reservation_create(lines=[{"sku": sku.code, "quantity": 3, "location": location.code}])
    reservation_commit(reservation_id=held.pk)  # sold now, through a checkout
    # not sales: a return, a correction, a transfer, a hold still open
    services.stock_return(sku=sku.code, location=location.code, quantity=4)
    services.stock_adjust(sku=sku.code, location=location.code, type="adjustment", quantity=-6)
    services.stock_transfer(sku=sku.code, location=location.code, to_location=other_location.code, quantity=8)
    reservation_create(lines=[{"sku": sku.code, "quantity": 1, "location": location.code}])
    return sku


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_known_velocities_cover_and_reorder_point(api, known, now, how):
    refresh(how)

    body = api.get(f"/api/v1/analytics/skus/{known.code}/").json()

    available = 1000 - 2 - 5 - 7 - 11 - 13 - 3 + 4 - 6 - 1  # the open hold of 1 is not available
    assert body["sku"] == "V-1" and body["available"] == available
    assert body["velocity"] == {"1d": 5.0, "7d": 1.43, "28d": 1.0}  # 5/1, 10/7, 28/28
    assert body["days_of_cover"] == round(available * 7 / 10, 2)
    stockout_at = timezone.datetime.fromisoformat(body["stockout_at"])
    assert abs(stockout_at - (now + timedelta(days=available * 7 / 10))) < timedelta(seconds=30)
    assert body["lead_time_days"] == 7 and body["safety_stock"] == 2
    assert body["reorder_point"] == 10 + 2  # ceil(10/7 x 7) + safety stock: exactly 10, not 11
    assert body["at_risk"] is False


def test_reorder_point_is_the_skus_own_when_set_and_lead_time_counts(api, known):
    services.sku_update(sku=known, lead_time_days=10)
    assert api.get("/api/v1/analytics/skus/V-1/").json()["reorder_point"] == 15 + 2  # ceil(100/7) = 15
    services.sku_update(sku=known, reorder_point=40)
    assert api.get("/api/v1/analytics/skus/V-1/").json()["reorder_point"] == 40
    services.sku_update(sku=known, reorder_point=0)
    assert api.get("/api/v1/analytics/skus/V-1/").json()["reorder_point"] == 0


def test_no_sales_means_no_cover_no_stockout_and_no_risk(api, sku, location):
    receive(sku, location, 3)
    body = api.get(f"/api/v1/analytics/skus/{sku.code}/").json()
    assert body["velocity"] == {"1d": 0.0, "7d": 0.0, "28d": 0.0}
    assert (body["days_of_cover"], body["stockout_at"], body["at_risk"]) == (None, None, False)
    assert body["reorder_point"] == 0


def test_at_risk_when_cover_is_under_lead_time(location, now):
    sku = SkuFactory(code="R-1")
    receive(sku, location, 19)
    sell(sku, location, 14, at=now - timedelta(days=1))  # velocity 2/day, 5 left: 2.5 days of cover
    body = selectors.sku_analytics_get(sku_code="R-1", now=now)
    assert (body["days_of_cover"], body["at_risk"]) == (2.5, True)
    assert body["stockout_at"] == now + timedelta(days=2.5)
    services.sku_update(sku=sku, lead_time_days=2)
    assert selectors.sku_analytics_get(sku_code="R-1", now=now)["at_risk"] is False  # 2.5 < 2 is false


def test_window_edges_are_exact(location, now):
    sku = SkuFactory(code="E-1")
    receive(sku, location, 100)
    sell(sku, location, 1, at=now - timedelta(days=7))  # exactly 7 x 24 h ago: out of the 7-day window
    sell(sku, location, 2, at=now - timedelta(days=7) + timedelta(microseconds=1))  # in it
    sell(sku, location, 4, at=now + timedelta(microseconds=1))  # after `now`: not yet
    for how in REFRESHES.values():
        refresh(how)
        assert selectors.units_sold(now=now, sku_ids=[sku.pk])[sku.pk] == {1: 0, 7: 2, 28: 3}


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_units_sold_match_a_count_of_the_ledger_at_any_instant(location, now, how):
    """Random sales over 40 days; for random instants and windows the selector agrees with a plain
    count of the ledger rows, whatever the daily table holds."""
    rng = random.Random(1301)
    skus = [SkuFactory(code=f"P-{i}") for i in range(3)]
    for sku in skus:
        receive(sku, location, 10_000)
    for _ in range(120):
        at = now - timedelta(seconds=rng.uniform(0, 40 * 86400))
        sell(rng.choice(skus), location, rng.randint(1, 5), at=at)
    refresh(how)
    rows = list(StockMovement.objects.filter(type__in=SOLD_TYPES).values_list("sku_id", "occurred_at", "on_hand_delta"))
    for _ in range(25):
        at = now - timedelta(seconds=rng.uniform(0, 12 * 86400))
        windows = sorted(rng.sample([1, 2, 3, 7, 10, 14, 28], 3))
        got = selectors.units_sold(windows=windows, now=at)
        for sku in skus:
            expected = {n: sum(-d for s, o, d in rows if s == sku.pk and at - timedelta(days=n) < o <= at)
                        for n in windows}
            assert got.get(sku.pk, dict.fromkeys(windows, 0)) == expected, (at, windows)


# ------------------------------------------------------------------------------ lists


@pytest.fixture
def movers(location, now):
    for code, quantity, ago in [("F-A", 10, timedelta(days=2)), ("F-B", 25, timedelta(hours=3)),
                                ("F-C", 10, timedelta(days=6)), ("F-D", 20, timedelta(days=20)),
                                ("F-E", 1, timedelta(days=2))]:
        sku = SkuFactory(code=code)
        receive(sku, location, 100)
        sell(sku, location, quantity, at=now - ago)
    SkuFactory(code="F-NONE")


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_fast_movers_most_units_first_without_the_unsold(api, movers, how):
    refresh(how)
    body = api.get("/api/v1/analytics/fast-movers/").json()  # days=7, limit=20
    assert body["results"] == [
        {"sku": "F-B", "units": 25, "velocity": 3.57},
        {"sku": "F-A", "units": 10, "velocity": 1.43},  # ties by code
        {"sku": "F-C", "units": 10, "velocity": 1.43},
        {"sku": "F-E", "units": 1, "velocity": 0.14},
    ]
    assert [r["sku"] for r in api.get("/api/v1/analytics/fast-movers/?days=28").json()["results"]] == [
        "F-B", "F-D", "F-A", "F-C", "F-E"]
    assert api.get("/api/v1/analytics/fast-movers/?days=1").json()["results"] == [
        {"sku": "F-B", "units": 25, "velocity": 25.0}]
    assert [r["sku"] for r in api.get("/api/v1/analytics/fast-movers/?days=3&limit=2").json()["results"]] == [
        "F-B", "F-A"]


@pytest.fixture
def risky(location, now):
    def make(code, on_hand, sold, lead_time_days=7, active=True, hold=0):
        sku = SkuFactory(code=code)
        services.sku_update(sku=sku, lead_time_days=lead_time_days, active=active)
        if on_hand + sold:
            receive(sku, location, on_hand + sold)
        if sold:
            sell(sku, location, sold, at=now - timedelta(days=1))
        if hold:
            reservation_create(lines=[{"sku": code, "quantity": hold, "location": location.code}])
        return sku

    make("R-1", on_hand=5, sold=14)  # 2.5 days of cover
    make("R-2", on_hand=20, sold=14, lead_time_days=14)  # 10 days < 14
    make("R-3", on_hand=0, sold=7)  # 0 days
    make("R-4", on_hand=0, sold=7, active=False)  # inactive: not listed
    make("R-5", on_hand=0, sold=0)  # no velocity: no cover, not at risk
    make("R-6", on_hand=10, sold=7, hold=9)  # available 1: 1 day
    make("R-7", on_hand=100, sold=7)  # 100 days: safe


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_stockout_risk_fewest_days_of_cover_first(api, risky, now, how):
    refresh(how)
    results = selectors.stockout_risk_list(now=now)
    assert [(r["sku"], r["days_of_cover"]) for r in results] == [("R-3", 0.0), ("R-6", 1.0), ("R-1", 2.5),
                                                                  ("R-2", 10.0)]
    # each is the SKU's own analytics object
    for result in results:
        assert result == selectors.sku_analytics_get(sku_code=result["sku"], now=now)
        assert result["at_risk"] is True
    body = api.get("/api/v1/analytics/stockout-risk/?limit=2").json()
    assert [r["sku"] for r in body["results"]] == ["R-3", "R-6"]
    assert set(body["results"][0]) == {"sku", "available", "velocity", "days_of_cover", "stockout_at",
                                       "lead_time_days", "safety_stock", "reorder_point", "at_risk"}


def test_lists_read_in_a_fixed_number_of_queries(risky, movers, now, django_assert_num_queries):
    # each units statement is preceded by a read of the daily-sales cutoff (a planner hint)
    with django_assert_num_queries(2):
        selectors.fast_movers_list(days=7, limit=20, now=now)
    with django_assert_num_queries(4):  # the risky SKUs, then their 1- and 28-day units
        selectors.stockout_risk_list(limit=50, now=now)
    with django_assert_num_queries(4):  # the SKU, its units, its availability
        selectors.sku_analytics_get(sku_code="R-1", now=now)


@pytest.mark.parametrize("url", [
    "/api/v1/analytics/fast-movers/?days=0", "/api/v1/analytics/fast-movers/?days=91",
    "/api/v1/analytics/fast-movers/?days=abc", "/api/v1/analytics/fast-movers/?days=7.5",
    "/api/v1/analytics/fast-movers/?days=-1", "/api/v1/analytics/fast-movers/?days=",
    "/api/v1/analytics/fast-movers/?days=%D9%A3",  # Arabic-Indic 3
    "/api/v1/analytics/fast-movers/?limit=0", "/api/v1/analytics/fast-movers/?limit=1001",
    "/api/v1/analytics/stockout-risk/?limit=x", "/api/v1/analytics/stockout-risk/?limit=0",
])
def test_bad_parameters_are_400(api, url):
    assert_error(api.get(url), 400)


def test_unknown_sku_404_and_scope_needed(api, client_with, sku):
    assert_error(api.get("/api/v1/analytics/skus/NOPE/"), 404, "sku_not_found")
    assert client_with("stock:read").get(f"/api/v1/analytics/skus/{sku.code}/").status_code == 200
    for url in (f"/api/v1/analytics/skus/{sku.code}/", "/api/v1/analytics/fast-movers/",
                "/api/v1/analytics/stockout-risk/", f"/api/v1/stock/{sku.code}/history/"):
        assert_error(client_with("catalog:write").get(url), 403, "permission_denied")


def test_daily_sales_refresh_is_incremental_and_idempotent(location, now, settings):
    settings.ANALYTICS_LEDGER_SETTLE_SECONDS = 0  # the cutoff is the refresh's own time
    sku = SkuFactory(code="D-1")
    receive(sku, location, 100)
    sell(sku, location, 3, at=now - timedelta(days=2))
    first = timezone.now()
    assert daily_sales_refresh(now=first) == 1
    assert daily_sales_refresh(now=first) == 0  # the same cutoff again: a twin run, nothing to do
    assert DailySales.objects.get(sku=sku).units == 3
    # a late event for the same day: the pair is recomputed from the ledger, not incremented
    sell(sku, location, 4, at=now - timedelta(days=2))
    assert selectors.units_sold(now=now, sku_ids=[sku.pk])[sku.pk] == {1: 0, 7: 7, 28: 7}  # before the refresh
    assert daily_sales_refresh(now=timezone.now()) == 1
    assert DailySales.objects.get(sku=sku).units == 7
    # the per-SKU window sums follow the touched SKU (day D-2 is a whole day of both windows)
    window = SkuSalesWindow.objects.get(sku=sku)
    assert (window.whole_7, window.whole_28) == (7, 7)
    assert selectors.units_sold(now=now, sku_ids=[sku.pk])[sku.pk] == {1: 0, 7: 7, 28: 7}


def test_sku_analytics_uses_every_location(location, now):
    sku = SkuFactory(code="M-1")
    far = LocationFactory(code="far")
    receive(sku, location, 5)
    receive(sku, far, 5)
    sell(sku, far, 5, at=now - timedelta(hours=1))
    body = selectors.sku_analytics_get(sku_code="M-1", now=now)
    assert body["available"] == 5 and body["velocity"]["1d"] == 5.0 and body["velocity"]["7d"] == 0.71
