"""Dynamic safety stock: daily, safety_stock = ceil(z x sigma x sqrt(lead_time_days)), sigma the
sample standard deviation of units sold per day over the 28 whole days before today. Each change
is logged with its inputs and re-pushed to channels through the catalog service."""

import math
import statistics
from datetime import timedelta

import pytest

from analytics.models import JobMark, SafetyStockChange
from analytics.selectors import safety_stock_formula
from analytics.services import analytics_daily, safety_stock_recompute
from channels.models import DirtyPair
from channels.services import channel_create, listing_upsert
from inventory import services
from tests.analytics.conftest import midnight, receive, sell
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db

SERIES = [2, 4] * 14  # 28 days, oldest first: mean 3, sample sigma sqrt(28/27)


def build_demand(sku, location, now, series):
    """Sales at noon of each of the len(series) whole days before today, oldest first."""
    receive(sku, location, sum(series) + 100, at=now - timedelta(days=40))
    today = midnight(now)
    for i, units in enumerate(series):
        if units:
            sell(sku, location, units, at=today - timedelta(days=len(series) - i) + timedelta(hours=12))


def test_formula_on_a_known_series():
    new, sigma, mean = safety_stock_formula(daily=SERIES, z=1.65, lead_time_days=9)
    assert mean == 3 and sigma == pytest.approx(statistics.stdev(SERIES)) and sigma == pytest.approx(1.01835, 1e-5)
    assert new == math.ceil(1.65 * statistics.stdev(SERIES) * 3) == 6  # 5.04 -> 6
    assert safety_stock_formula(daily=[5] * 28, z=1.65, lead_time_days=9)[0] == 0  # steady demand: none needed
    assert safety_stock_formula(daily=SERIES, z=1.65, lead_time_days=0)[0] == 0
    # float noise never adds a unit: 2 x 1 x sqrt(9) is exactly 6
    assert safety_stock_formula(daily=[0, 2, 0, 2], z=2 / statistics.stdev([0, 2, 0, 2]), lead_time_days=9)[0] == 6


def test_recompute_sets_logs_and_repushes(location, now):
    # given: a dynamic SKU listed on a channel, with 28 days of known demand and lead time 9
    sku = SkuFactory(code="DYN-1", safety_stock=1)
    services.sku_update(sku=sku, dynamic_safety_stock=True, lead_time_days=9)
    build_demand(sku, location, now, SERIES)
    channel = channel_create(slug="shop", name="Shop", kind="webhook", base_url="http://127.0.0.1:9",
                             settings={"target_url": "http://127.0.0.1:9/hooks"}, push_enabled=True)
    listing_upsert(channel=channel, sku=sku.code, external_id="ext-1")
    DirtyPair.objects.all().delete()  # setup: nothing waiting to be pushed
    static = SkuFactory(code="STATIC", safety_stock=1)
    build_demand(static, location, now, SERIES)

    # when
    assert safety_stock_recompute(now=now) == 1

    # then: the value, its inputs in the history, and the channel's pair marked for a push
    sku.refresh_from_db()
    assert sku.safety_stock == 6
    change = SafetyStockChange.objects.get(sku=sku)
    assert (change.old_safety_stock, change.new_safety_stock, change.z, change.lead_time_days, change.demand_days) == (
        1, 6, 1.65, 9, 28)
    assert change.sigma == pytest.approx(statistics.stdev(SERIES)) and change.mean == 3
    assert change.day == midnight(now).date()
    assert set(DirtyPair.objects.values_list("channel__slug", "sku__code")) == {("shop", "DYN-1")}
    static.refresh_from_db()
    assert static.safety_stock == 1 and not SafetyStockChange.objects.filter(sku=static).exists()


def test_once_a_day_and_unchanged_values_are_not_logged(location, now, api):
    sku = SkuFactory(code="DYN-2")
    services.sku_update(sku=sku, dynamic_safety_stock=True, lead_time_days=9)
    build_demand(sku, location, now, SERIES)
    assert safety_stock_recompute(now=now) == 1
    # a merchandiser's edit after the day's run stands until the next day
    services.sku_update(sku=sku, safety_stock=50)
    assert safety_stock_recompute(now=now) == 0
    sku.refresh_from_db()
    assert sku.safety_stock == 50
    # the next day's run recomputes (the series moved one day: yesterday had no sales)
    assert safety_stock_recompute(now=now + timedelta(days=1)) == 1
    # forced again with the same data: same value, nothing logged
    assert safety_stock_recompute(now=now + timedelta(days=1), force=True) == 0
    assert SafetyStockChange.objects.filter(sku=sku).count() == 2
    assert JobMark.objects.get(name="safety_stock").day == (midnight(now) + timedelta(days=1)).date()

    sku.refresh_from_db()
    body = api.get("/api/v1/analytics/skus/DYN-2/safety-stock/").json()
    assert body["sku"] == "DYN-2" and body["dynamic_safety_stock"] is True
    assert body["safety_stock"] == sku.safety_stock == 6
    assert [(c["old"], c["new"]) for c in body["changes"]] == [(50, 6), (0, 6)]
    assert set(body["changes"][0]) == {"computed_at", "day", "old", "new", "sigma", "mean", "z", "lead_time_days",
                                       "demand_days"}


def test_short_history_and_inactive_skus_keep_their_value(location, now, settings):
    settings.ANALYTICS_SAFETY_STOCK_MIN_DAYS = 7
    young = SkuFactory(code="YOUNG", safety_stock=4)
    services.sku_update(sku=young, dynamic_safety_stock=True)
    build_demand(young, location, now, [1, 9, 1])  # 3 days of history (created today)
    retired = SkuFactory(code="RETIRED", safety_stock=4)
    services.sku_update(sku=retired, dynamic_safety_stock=True, active=False)
    build_demand(retired, location, now, SERIES)
    assert safety_stock_recompute(now=now) == 0
    assert JobMark.objects.get(name="safety_stock").detail["skipped_short_history"] == 1


def test_z_is_a_setting(location, now, settings):
    settings.ANALYTICS_SAFETY_STOCK_Z = 2.33  # ~99% service level
    sku = SkuFactory(code="DYN-Z")
    services.sku_update(sku=sku, dynamic_safety_stock=True, lead_time_days=9)
    build_demand(sku, location, now, SERIES)
    result = analytics_daily(now=now)
    sku.refresh_from_db()
    assert result["safety_stock_changed"] == 1
    assert sku.safety_stock == math.ceil(2.33 * statistics.stdev(SERIES) * 3) == 8


def test_a_run_out_of_time_leaves_the_day_open_for_the_next(location, now):
    sku = SkuFactory(code="DYN-T")
    services.sku_update(sku=sku, dynamic_safety_stock=True, lead_time_days=9)
    build_demand(sku, location, now, SERIES)
    assert safety_stock_recompute(now=now, budget_seconds=0) == 0  # stopped before the first batch
    assert not JobMark.objects.filter(name="safety_stock").exists()
    assert safety_stock_recompute(now=now) == 1  # the next run carries on
    assert safety_stock_recompute(now=now) == 0
