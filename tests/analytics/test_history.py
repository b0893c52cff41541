"""GET /api/v1/stock/{sku}/history/: the SKU's totals per snapshot bucket, oldest first. Snapshots
hold only positions that changed, so every point must carry forward the last level of the
positions that did not change, from inside or before the range, and from the hourly rollups once
the 5-minute rows are pruned."""

from datetime import timedelta, timezone

import pytest

from analytics.selectors import stock_history_get
from inventory import services
from reservations.services import reservation_create
from tests.analytics.conftest import assert_error, minutes, receive, sell
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


def iso(at):
    return at.isoformat().replace("+00:00", "Z")


@pytest.fixture
def history(sku, location, other_location, bucket_base):
    """Five buckets, 10:00 to 10:20; the expected (on_hand, reserved, available) at each."""
    other = SkuFactory(code="OTHER")
    receive(sku, location, 10)
    receive(sku, other_location, 5)
    receive(other, location, 100)
    services.snapshot_take(now=bucket_base)  # baseline: wh 10, store 5
    sell(sku, location, 1)
    services.snapshot_take(now=bucket_base + minutes(5))  # wh 9 (store unchanged)
    services.snapshot_take(now=bucket_base + minutes(10))  # nothing moved
    sell(sku, other_location, 2)
    sell(other, location, 50)
    services.snapshot_take(now=bucket_base + minutes(15))  # store 3 (wh unchanged)
    reservation_create(lines=[{"sku": sku.code, "quantity": 4, "location": location.code}])
    services.snapshot_take(now=bucket_base + minutes(20))  # wh 9, 4 reserved
    return [
        (bucket_base, (15, 0, 15)),
        (bucket_base + minutes(5), (14, 0, 14)),
        (bucket_base + minutes(10), (14, 0, 14)),
        (bucket_base + minutes(15), (12, 0, 12)),
        (bucket_base + minutes(20), (12, 4, 8)),
    ]


def points(body):
    return [(p["at"], (p["on_hand"], p["reserved"], p["available"])) for p in body["points"]]


def test_every_bucket_carries_forward_the_positions_that_did_not_change(sku, history, bucket_base):
    body = stock_history_get(sku_code=sku.code, start=bucket_base - minutes(30), end=bucket_base + minutes(30),
                             now=bucket_base + minutes(30))
    assert points(body) == history
    assert body["truncated"] is False


def test_a_range_starting_after_the_last_change_of_a_position_still_counts_it(sku, history, bucket_base):
    # the warehouse last changed at 10:05, the store at 10:15: from 10:10 both come from before the range
    body = stock_history_get(sku_code=sku.code, start=bucket_base + minutes(10), end=bucket_base + minutes(20),
                             now=bucket_base + minutes(30))
    assert points(body) == history[2:]
    single = stock_history_get(sku_code=sku.code, start=bucket_base + minutes(12), end=bucket_base + minutes(17),
                               now=bucket_base + minutes(30))
    assert points(single) == [history[3]]


def test_past_the_5_minute_retention_points_are_hourly_from_the_rollup(sku, history, bucket_base):
    later = bucket_base + timedelta(days=30)
    expected = [history[-1]]  # the hour's last bucket, 10:20
    window = {"sku_code": sku.code, "start": bucket_base - timedelta(hours=1), "end": bucket_base + timedelta(hours=2),
              "now": later}
    assert points(stock_history_get(**window)) == expected  # 5-minute rows still there
    result = services.snapshot_maintain(now=later)
    assert result["snapshots"] > 0  # rolled up, then pruned
    assert points(stock_history_get(**window)) == expected  # from the hourly rows alone


def test_more_points_than_the_limit_are_cut_with_where_to_continue(sku, history, bucket_base):
    body = stock_history_get(sku_code=sku.code, start=bucket_base, end=bucket_base + minutes(20),
                             now=bucket_base + minutes(30), max_points=2)
    assert points(body) == history[:2]
    assert body["truncated"] is True and body["next_from"] == bucket_base + minutes(10)


def test_api_answers_the_contract_shape(api, sku, history, bucket_base):
    response = api.get(f"/api/v1/stock/{sku.code}/history/",
                       {"from": iso(bucket_base + minutes(5)), "to": iso(bucket_base + minutes(15))})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["sku"] == sku.code
    assert body["points"] == [
        {"at": iso(at), "on_hand": on_hand, "reserved": reserved, "available": available}
        for at, (on_hand, reserved, available) in history[1:4]]
    # any offset is the same instant
    new_york = (bucket_base + minutes(5)).astimezone(timezone(timedelta(hours=-5))).isoformat()
    shifted = api.get(f"/api/v1/stock/{sku.code}/history/", {"from": new_york, "to": iso(bucket_base + minutes(15))})
    assert shifted.json() == body


def test_defaults_are_the_last_24_hours(api, sku, location):
    receive(sku, location, 7)
    assert api.get(f"/api/v1/stock/{sku.code}/history/").json()["points"] == []
    services.snapshot_take()
    body = api.get(f"/api/v1/stock/{sku.code}/history/").json()
    assert [(p["on_hand"], p["available"]) for p in body["points"]] == [(7, 7)]


@pytest.mark.parametrize("params,code", [
    ({"from": "yesterday"}, "invalid_from"),
    ({"from": "2031-03-10T10:00:00"}, "invalid_from"),  # no offset
    ({"to": "2031-13-45T10:00:00Z"}, "invalid_to"),
    ({"to": "٢٠٣١-03-10T10:00:00Z"}, "invalid_to"),  # other scripts' digits
    ({"from": "2031-03-10"}, "invalid_from"),  # a date is not an instant
])
def test_bad_dates_are_400(api, sku, params, code):
    assert_error(api.get(f"/api/v1/stock/{sku.code}/history/", params), 400, code)


def test_reversed_range_is_empty_and_unknown_sku_404(api, sku):
    body = api.get(f"/api/v1/stock/{sku.code}/history/",
                   {"from": "2031-03-10T11:00:00Z", "to": "2031-03-10T10:00:00Z"}).json()
    assert body["points"] == []
    assert_error(api.get("/api/v1/stock/NOPE/history/"), 404, "sku_not_found")


def test_history_reads_in_a_fixed_number_of_queries(api, sku, history, bucket_base, django_assert_max_num_queries):
    with django_assert_max_num_queries(3):  # SKU, points, rows
        stock_history_get(sku_code=sku.code, start=bucket_base, end=bucket_base + minutes(20),
                          now=bucket_base + minutes(30))
