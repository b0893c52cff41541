"""Bundles in analytics and alerts (docs/analytics.md, "Bundles").

A bundle's sale writes ledger rows on its components, so a component's units sold include what it
sold inside bundles; a bundle's own units sold are its first component's (lowest id) sold rows
written for it (metadata `bundle_id`), divided by that component's units per bundle: direct sales
and reservation commits alike. Its stock is its derived availability. Every answer is checked with
the daily-sales table empty, holding nothing recent, and holding everything, and against a plain
count of the ledger; plain SKUs' numbers are checked to be exactly what they were.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics import selectors
from analytics.alerts import alerts_evaluate
from analytics.models import Alert, DailySales, SafetyStockChange
from analytics.services import daily_sales_refresh, safety_stock_recompute
from inventory import services
from inventory.models import SOLD_TYPES, BundleComponent, Sku, StockMovement
from inventory.selectors import stock_get
from reservations.services import reservation_commit, reservation_create, reservation_release
from tests.analytics.conftest import minutes, receive, sell
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


def sku(code: str) -> Sku:
    return Sku.objects.get(code=code)


@pytest.fixture
def kit(now):
    """MUG (created first: the lowest id) and TEA at wh and store; GIFT = 2 x MUG + 1 x TEA and
    DUO = 1 x TEA + 3 x MUG (listed TEA first: its first component is still MUG)."""
    wh, store = LocationFactory(code="wh", priority=10), LocationFactory(code="store", priority=20)
    mug, tea = SkuFactory(code="MUG"), SkuFactory(code="TEA")
    assert mug.pk < tea.pk
    receive(mug, wh, 200, at=now - timedelta(days=40))
    receive(tea, wh, 100, at=now - timedelta(days=40))
    receive(mug, store, 10, at=now - timedelta(days=40))
    receive(tea, store, 10, at=now - timedelta(days=40))
    services.sku_create(code="GIFT", name="Gift", components=[{"sku": "MUG", "quantity": 2},
                                                              {"sku": "TEA", "quantity": 1}])
    services.sku_create(code="DUO", name="Duo", components=[{"sku": "TEA", "quantity": 1},
                                                            {"sku": "MUG", "quantity": 3}])
    return {"wh": wh, "store": store}


@pytest.fixture
def sales(kit, now):
    """A known ledger. Units sold (1 d, 7 d, 28 d):
    GIFT 3, 4, 7   (direct sales 2 now-2h, 1 now-3d, 3 now-10d; a checkout of 1 committed now)
    DUO  1, 1, 1   (a checkout of 1 committed now)
    MUG  GIFT x2 + DUO x3 + its own (5 now-20h, 7 now-12d, 1 in the checkout):
         6+3+5+1 = 15, 8+3+5+1 = 17, 14+3+5+7+1 = 30
    TEA  GIFT x1 + DUO x1 + its own (4 now-5d): 3+1 = 4, 4+1+4 = 9, 7+1+4 = 12
    Not sales: a released bundle hold, an open one, a return."""
    wh, store = kit["wh"], kit["store"]
    sell(sku("GIFT"), wh, 2, at=now - timedelta(hours=2))
    sell(sku("GIFT"), store, 1, at=now - timedelta(days=3))
    sell(sku("GIFT"), wh, 3, at=now - timedelta(days=10))
    sell(sku("MUG"), wh, 5, at=now - timedelta(hours=20))
    sell(sku("MUG"), wh, 7, at=now - timedelta(days=12))
    sell(sku("TEA"), wh, 4, at=now - timedelta(days=5))
    committed = reservation_create(lines=[{"sku": "GIFT", "quantity": 1, "location": "wh"},
                                          {"sku": "DUO", "quantity": 1, "location": "wh"},
                                          {"sku": "MUG", "quantity": 1, "location": "store"}])
    reservation_commit(reservation_id=committed.pk)  # MUG +1 sold alone, at store
    released = reservation_create(lines=[{"sku": "GIFT", "quantity": 2, "location": "wh"}])
    reservation_release(reservation_id=released.pk)
    reservation_create(lines=[{"sku": "GIFT", "quantity": 1, "location": "wh"}])  # still held
    services.stock_return(sku="MUG", location="wh", quantity=2)


EXPECTED = {"GIFT": {1: 3, 7: 4, 28: 7}, "DUO": {1: 1, 7: 1, 28: 1},
            "MUG": {1: 15, 7: 17, 28: 30}, "TEA": {1: 4, 7: 9, 28: 12}}


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_bundle_units_and_component_units(sales, now, how):
    refresh(how)

    got = selectors.units_sold(now=timezone.now())  # the checkouts committed after `now` was taken

    assert {code: got[sku(code).pk] for code in EXPECTED} == EXPECTED
    # the bundles' rows in the daily table are bundle units too (whole days before today)
    if how == timedelta(hours=1):
        assert DailySales.objects.get(sku=sku("GIFT"), day=(now - timedelta(days=10)).date()).units == 3


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_a_bundles_analytics_object_uses_bundle_units_and_derived_availability(api, sales, now, how):
    refresh(how)
    derived = api.get("/api/v1/stock/GIFT/").json()["available"]

    body = api.get("/api/v1/analytics/skus/GIFT/").json()

    assert body["available"] == derived
    assert body["velocity"] == {"1d": 3.0, "7d": 0.57, "28d": 0.25}  # 3/1, 4/7, 7/28
    assert body["days_of_cover"] == round(derived * 7 / 4, 2)
    assert body["reorder_point"] == 4 + 0  # ceil(4/7 x 7) + safety stock 0
    assert body["at_risk"] is False
    mug = api.get("/api/v1/analytics/skus/MUG/").json()
    assert mug["velocity"]["7d"] == round(17 / 7, 2)  # with the units it sold inside bundles


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_fast_movers_list_bundles_in_bundle_units_and_components_with_everything(api, sales, how):
    refresh(how)

    results = api.get("/api/v1/analytics/fast-movers/?days=7").json()["results"]

    assert results == [{"sku": "MUG", "units": 17, "velocity": 2.43}, {"sku": "TEA", "units": 9, "velocity": 1.29},
                       {"sku": "GIFT", "units": 4, "velocity": 0.57}, {"sku": "DUO", "units": 1, "velocity": 0.14}]


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_bundle_units_match_a_count_of_the_ledger_at_any_instant(kit, now, how):
    """Random sales of two bundles and their components over 40 days (direct, and checkouts
    committed at random instants); for random instants and windows, every SKU's units agree with
    a plain count of the ledger: components all their sold rows, bundles their first component's
    rows written for them / units per bundle."""
    rng = random.Random(4242)
    wh = kit["wh"]
    receive(sku("MUG"), wh, 100_000)
    receive(sku("TEA"), wh, 100_000)
    for _ in range(120):
        at = now - timedelta(seconds=rng.uniform(0, 40 * 86400))
        code = rng.choice(["GIFT", "DUO", "MUG", "TEA"])
        if rng.random() < 0.7:
            sell(sku(code), wh, rng.randint(1, 4), at=at)
        else:
            held = reservation_create(lines=[{"sku": code, "quantity": rng.randint(1, 3), "location": "wh"}])
            reservation_commit(reservation_id=held.pk, context=services.MovementContext(source="test", occurred_at=at))
    refresh(how)
    rows = list(StockMovement.objects.filter(type__in=SOLD_TYPES).values_list(
        "sku_id", "occurred_at", "on_hand_delta", "metadata"))
    first = {b: min(BundleComponent.objects.filter(bundle_id=b).values_list("component_id", "quantity"))
             for b in (sku("GIFT").pk, sku("DUO").pk)}

    def expected(sku_id, at, n):
        start = at - timedelta(days=n)
        if sku_id in first:
            component, per = first[sku_id]
            return sum(-d // per for s, o, d, meta in rows
                       if s == component and meta.get("bundle_id") == sku_id and start < o <= at)
        return sum(-d for s, o, d, _ in rows if s == sku_id and start < o <= at)

    ids = [sku(code).pk for code in ("GIFT", "DUO", "MUG", "TEA")]
    for _ in range(20):
        at = now - timedelta(seconds=rng.uniform(0, 12 * 86400))
        windows = sorted(rng.sample([1, 2, 3, 7, 10, 14, 28], 3))
        got = selectors.units_sold(windows=windows, now=at)
        for sku_id in ids:
            assert got.get(sku_id, dict.fromkeys(windows, 0)) == {n: expected(sku_id, at, n) for n in windows}, (
                sku_id, at, windows)
        # one SKU asked alone answers the same
        one = rng.choice(ids)
        assert selectors.units_sold(windows=windows, now=at, sku_ids=[one]).get(one, dict.fromkeys(windows, 0)) == \
            got.get(one, dict.fromkeys(windows, 0))


def test_plain_skus_answer_the_same_with_bundles_in_the_catalog(location, now):
    """Contract section 4 "Analytics" stays exact for plain SKUs: the same sales give the same
    answers, whether bundles exist or not."""
    plain = SkuFactory(code="PLAIN")
    receive(plain, location, 100, at=now - timedelta(days=30))
    for days, quantity in [(0.1, 2), (2, 3), (9, 5)]:
        sell(plain, location, quantity, at=now - timedelta(days=days))
    before = (selectors.sku_analytics_get(sku_code="PLAIN", now=now), selectors.fast_movers_list(now=now),
              selectors.stockout_risk_list(now=now))

    SkuFactory(code="PART")
    receive(sku("PART"), location, 10)
    services.sku_create(code="SET", name="Set", components=[{"sku": "PART", "quantity": 2}])
    sell(sku("SET"), location, 1, at=now - timedelta(hours=1))
    daily_sales_refresh(now=now + timedelta(hours=1))

    assert selectors.sku_analytics_get(sku_code="PLAIN", now=now) == before[0]
    assert [r for r in selectors.fast_movers_list(now=now) if r["sku"] == "PLAIN"] == before[1]
    assert selectors.stockout_risk_list(now=now) == before[2] == []


# ------------------------------------------------------------------------------ stockout risk


@pytest.fixture
def risky(location, now):
    """Days of cover (lead time 7 everywhere): OFF-PART 1, P-A 2, PART 3, SET 3, P-B 5.
    SET = 2 x PART sold 7 in a day (1/day) and PART has 6 left: 3 sets, 3 days; PART sold 14
    (inside the sets), 6 left: 3 days too (ties by code). OFF = 1 x OFF-PART is inactive: not
    listed, though its component is."""
    SkuFactory(code="PART")
    receive(sku("PART"), location, 20)
    services.sku_create(code="SET", name="Set", components=[{"sku": "PART", "quantity": 2}])
    sell(sku("SET"), location, 7, at=now - timedelta(days=1))
    for code, on_hand, sold in [("P-A", 2, 7), ("P-B", 5, 7)]:
        SkuFactory(code=code)
        receive(sku(code), location, on_hand + sold)
        sell(sku(code), location, sold, at=now - timedelta(days=1))
    SkuFactory(code="OFF-PART")
    receive(sku("OFF-PART"), location, 8)
    services.sku_create(code="OFF", name="Inactive set", components=[{"sku": "OFF-PART", "quantity": 1}])
    sell(sku("OFF"), location, 7, at=now - timedelta(days=1))
    services.sku_update(sku=sku("OFF"), active=False)


@pytest.mark.parametrize("how", REFRESHES.values(), ids=REFRESHES.keys())
def test_stockout_risk_ranks_bundles_by_derived_availability_among_plain_skus(api, risky, now, how):
    refresh(how)

    results = selectors.stockout_risk_list(now=now)

    assert [(r["sku"], r["available"], r["days_of_cover"]) for r in results] == [
        ("OFF-PART", 1, 1.0), ("P-A", 2, 2.0), ("PART", 6, 3.0), ("SET", 3, 3.0), ("P-B", 5, 5.0)]
    for result in results:
        assert result == selectors.sku_analytics_get(sku_code=result["sku"], now=now)
        assert result["at_risk"] is True
    assert results[3]["velocity"] == {"1d": 0.0, "7d": 1.0, "28d": 0.25}  # 7 sets, a day and 24 h ago
    for limit, codes in [(3, ["OFF-PART", "P-A", "PART"]), (4, ["OFF-PART", "P-A", "PART", "SET"])]:
        body = api.get(f"/api/v1/analytics/stockout-risk/?limit={limit}").json()
        assert [r["sku"] for r in body["results"]] == codes


def test_lists_with_bundles_read_in_a_fixed_number_of_queries(risky, now, django_assert_num_queries):
    with django_assert_num_queries(2):  # the cutoff hint, the statement (bundles' branches in it)
        selectors.fast_movers_list(days=7, limit=20, now=now)
    # the cutoff, the statement, the sold bundles' derived stock, the cutoff, the 1- and 28-day units
    with django_assert_num_queries(5):
        selectors.stockout_risk_list(limit=50, now=now)
    with django_assert_num_queries(4):  # the SKU, the cutoff, its units, its derived availability
        selectors.sku_analytics_get(sku_code="SET", now=now)


# ------------------------------------------------------------------------------ history, safety stock


def test_a_bundles_history_is_derived_from_its_components_snapshots(kit, bucket_base):
    services.snapshot_take(now=bucket_base)  # wh: MUG 200, TEA 100 -> 100; store: 10, 10 -> 5
    services.stock_sell(sku="TEA", location="wh", quantity=95)  # wh: TEA 5 -> 5 sets
    services.snapshot_take(now=bucket_base + minutes(5))
    reservation_create(lines=[{"sku": "GIFT", "quantity": 2, "location": "store"}])  # store: 4 of 10 mugs held
    services.snapshot_take(now=bucket_base + minutes(10))

    body = selectors.stock_history_get(sku_code="GIFT", start=bucket_base, end=bucket_base + minutes(10),
                                       now=bucket_base + minutes(10))

    # wh 100 sets, store 5; then wh 5 (TEA 5), store 5; then store's 5 with 2 held
    assert [(p["on_hand"], p["reserved"], p["available"]) for p in body["points"]] == [
        (105, 0, 105), (10, 0, 10), (10, 2, 8)]
    assert body["points"][-1]["available"] == stock_get(sku_code="GIFT")["available"]


def test_a_dynamic_bundles_demand_series_is_in_bundle_units(kit, now):
    gift = sku("GIFT")
    services.sku_update(sku=gift, dynamic_safety_stock=True)
    gift.created_at = now - timedelta(days=60)
    Sku.objects.filter(pk=gift.pk).update(created_at=gift.created_at)
    days = [(now - timedelta(days=d)).replace(hour=12) for d in range(1, 15)]
    for i, at in enumerate(days):
        sell(gift, kit["wh"], 1 + i % 3, at=at)  # 1, 2, 3, 1, ... bundles a day

    first = (now - timedelta(days=28)).date()
    series = selectors.daily_units(sku_ids=[gift.pk], first_day=first, last_day=(now - timedelta(days=1)).date())
    assert sorted(series[gift.pk].values()) == sorted(1 + i % 3 for i in range(14))

    assert safety_stock_recompute(now=now, force=True) == 1
    change = SafetyStockChange.objects.get(sku=gift)
    assert (change.demand_days, change.mean) == (28, pytest.approx(27 / 28))  # bundle units, zeros included
    gift.refresh_from_db()
    assert gift.safety_stock == change.new_safety_stock > 0


# ------------------------------------------------------------------------------ alerts


def open_alerts(code):
    return sorted(a.kind for a in Alert.objects.filter(sku__code=code, status="open"))


def test_a_bundle_has_its_own_stock_alerts_on_derived_availability(kit):
    # given: GIFT's own reorder point 3; store makes 5 sets, wh 100
    gift = sku("GIFT")
    services.sku_update(sku=gift, reorder_point=3)
    services.sku_update(sku=sku("DUO"), active=False)  # inactive: no alerts of its own
    for code in ("MUG", "TEA"):
        services.sku_update(sku=sku(code), reorder_point=0)
    alerts_evaluate()
    assert open_alerts("GIFT") == []

    # when: TEA runs out at wh, then is down to 2 at store: GIFT makes 2 sets, all at store
    services.stock_adjust(sku="TEA", location="wh", type="count", quantity=0)
    services.stock_adjust(sku="TEA", location="store", type="count", quantity=2)
    alerts_evaluate()

    # then: GIFT is low (its own alert; TEA still has 2 and is above its reorder point 0)
    assert open_alerts("GIFT") == ["low_stock"]
    assert Alert.objects.get(sku=gift, kind="low_stock").detail == {"available": 2, "reorder_point": 3}
    assert open_alerts("TEA") == [] and open_alerts("DUO") == []

    # a held set counts: both units held, GIFT is out everywhere (TEA has 0 available too)
    reservation_create(lines=[{"sku": "GIFT", "quantity": 2, "location": "store"}])
    alerts_evaluate()
    assert open_alerts("GIFT") == ["low_stock", "stockout"]
    assert open_alerts("TEA") == ["low_stock", "stockout"]  # the component's own, as always

    # a receipt of the component resolves the bundle's alerts within the same evaluation
    services.stock_receive(sku="TEA", location="wh", quantity=50)
    alerts_evaluate()
    assert open_alerts("GIFT") == [] and open_alerts("TEA") == []

    # deactivating the bundle resolves whatever it had (the catalog announces it on its components)
    services.stock_adjust(sku="TEA", location="wh", type="count", quantity=0)
    alerts_evaluate()
    assert open_alerts("GIFT") == ["low_stock", "stockout"]
    services.sku_update(sku=gift, active=False)
    alerts_evaluate()
    assert open_alerts("GIFT") == []
    assert not Alert.objects.filter(sku__code="DUO").exists()


def test_a_bundles_computed_reorder_point_uses_its_bundle_units(kit, now):
    # given: GIFT sold 14 sets in the last day: computed reorder point ceil(14 x 7 / 7) + 0 = 14
    sell(sku("GIFT"), kit["wh"], 14, at=now - timedelta(hours=3))
    # when: TEA at wh counted down to 9: wh makes 9 sets, store 5
    services.stock_adjust(sku="TEA", location="wh", type="count", quantity=9)
    alerts_evaluate()

    # then: GIFT is low; TEA (19 available, reorder point 14 from the 14 it sold inside sets) is not
    assert open_alerts("GIFT") == ["low_stock"]
    assert Alert.objects.get(sku__code="GIFT", kind="low_stock").detail == {"available": 14, "reorder_point": 14}
    assert open_alerts("TEA") == [] and open_alerts("MUG") == []

    services.stock_adjust(sku="TEA", location="wh", type="count", quantity=10)
    alerts_evaluate()
    assert open_alerts("GIFT") == []
