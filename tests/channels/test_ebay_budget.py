"""eBay pushes over real HTTP against the simulator: bulkUpdatePriceQuantity 25 per call with
per-item statuses, and the daily revision budget per listing (held-back changes, the reserve spent
near zero, eBay's own refusal at its limit, pacing when low, the next day, health)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels.models import DeadLetter, DirtyPair, PushAttempt, RevisionBudget
from channels.propagation import budget_policy, channel_push
from inventory import services as stock
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


def level(simulator, store: str, offer: str):
    return simulator.state.levels(store)["levels"].get(offer)


def sent(simulator, store: str) -> list[dict]:
    return [r for r in simulator.state.requests_for(store) if r["path"].endswith("bulk_update_price_quantity")]


def ebay_control(simulator, **body) -> dict:
    answer = requests.post(f"{simulator.url}/_sim/ebay", json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def budget(channel, sku) -> RevisionBudget:
    return RevisionBudget.objects.get(channel=channel, key=f"sku:{sku.pk}")


def next_day(simulator, channel) -> None:
    """eBay's calendar day ends: yesterday's counts no longer apply, held pairs are released."""
    RevisionBudget.objects.filter(channel=channel).update(day=F("day") - timedelta(days=1))
    DirtyPair.objects.filter(channel=channel).update(next_attempt_at=timezone.now())
    ebay_control(simulator, store=channel.slug, next_day=True)


def health(api, channel) -> dict:
    return api.get(f"/api/v1/channels/{channel.slug}/").json()["revision_budget"]


# ------------------------------------------------------------------------------ batching


def test_25_items_per_call_and_a_refused_item_retries_then_becomes_a_dead_letter(simulator, make_channel, list_sku,
                                                                                  location):
    from devtools.simulator import Faults

    channel = make_channel("ebay", retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01})
    skus = [SkuFactory(code=f"EB-{n}") for n in range(60)]
    for n, sku in enumerate(skus):
        list_sku(channel, sku, n=n)
    for sku in skus[:3]:
        stock.stock_receive(sku=sku, location=location, quantity=4)
    simulator.state.faults["*"] = Faults(item_errors={"OFFER-7"})
    # when the 60 new listings are pushed
    report = channel_push(channel_id=channel.pk)
    # then three calls of at most 25, eBay answering per item (207 for the call with a refusal)
    assert [r["items"] for r in sent(simulator, channel.slug)] == [25, 25, 10]
    assert sorted(r["status"] for r in sent(simulator, channel.slug)) == [200, 200, 207]
    assert report.pushed == 59 and report.failed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 4 and level(simulator, channel.slug, "OFFER-59") == 0
    assert sorted(PushAttempt.objects.filter(channel=channel).values_list("outcome", flat=True)) == [
        "partial", "success", "success"]
    # a revision is counted per listing sent; the refused one was given back (nothing was revised)
    assert budget(channel, skus[1]).used == 1 and budget(channel, skus[7]).used == 0
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.sku == skus[7] and pair.attempts == 1 and "statusCode 400" in pair.last_error
    assert not pair.budget_held
    # the retry fails again: after the channel's last attempt it is a dead letter
    DirtyPair.objects.filter(channel=channel).update(next_attempt_at=timezone.now())
    channel_push(channel_id=channel.pk)
    assert [r["items"] for r in sent(simulator, channel.slug)][-1] == 1
    letter = DeadLetter.objects.get(channel=channel)
    assert (letter.sku, letter.attempts, letter.status) == (skus[7], 2, "open")
    assert "25702" in letter.last_error
    assert not DirtyPair.objects.filter(channel=channel).exists()


# ------------------------------------------------------------------------------ the daily budget


def test_the_budget_holds_back_changes_keeps_a_reserve_for_near_zero_and_renews_the_next_day(
        api, simulator, make_channel, list_sku, location, sku):
    # given a budget of 5 revisions per listing and day, 2 of them kept for quantities of 2 or less
    channel = make_channel("ebay", settings={"revisions_per_day": 5, "revision_reserve": 2, "revision_low_stock": 2,
                                             "revision_tight": 0})
    list_sku(channel, sku, n=1)
    stock.stock_receive(sku=sku, location=location, quantity=50)
    for expected in (50, 49, 48):  # the first push and two sales spend the normal budget (3)
        if expected < 50:
            stock.stock_sell(sku=sku, location=location, quantity=1)
        assert channel_push(channel_id=channel.pk).pushed == 1
        assert level(simulator, channel.slug, "OFFER-1") == expected
    assert budget(channel, sku).used == 3
    # when another sale comes, it is held back: nothing is sent, eBay still shows 48
    stock.stock_sell(sku=sku, location=location, quantity=1)
    report = channel_push(channel_id=channel.pk)
    assert (report.requests, report.held, report.pushed) == (0, 1, 0)
    assert level(simulator, channel.slug, "OFFER-1") == 48
    pair = DirtyPair.objects.get(channel=channel)
    policy = budget_policy(channel)
    assert pair.budget_held and pair.attempts == 0 and "normal budget spent" in pair.last_error
    assert pair.next_attempt_at == policy.day_end(timezone.now())
    # and the channel's health says what is left and what waits
    seen = health(api, channel)
    assert {k: seen[k] for k in ("per_listing", "reserve", "listings", "used", "remaining", "listings_on_reserve",
                                 "listings_spent", "held_back")} == {
        "per_listing": 5, "reserve": 2, "listings": 1, "used": 3, "remaining": 2, "listings_on_reserve": 1,
        "listings_spent": 0, "held_back": 1}
    assert seen["day"] == str(policy.day(timezone.now())) and seen["next_release_at"]
    # a further sale is judged again at once, and held again (coalesced: 47 and 46 are never sent)
    stock.stock_sell(sku=sku, location=location, quantity=1)
    assert channel_push(channel_id=channel.pk).held == 1
    assert len(sent(simulator, channel.slug)) == 3
    # when the quantity nears zero, the reserve is spent: accuracy matters most there
    stock.stock_sell(sku=sku, location=location, quantity=44)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 2
    stock.stock_sell(sku=sku, location=location, quantity=1)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 1
    assert (budget(channel, sku).used, budget(channel, sku).reserve_used) == (5, 2)
    # the day's budget is spent: even the last unit selling waits for the next day
    stock.stock_sell(sku=sku, location=location, quantity=1)
    assert channel_push(channel_id=channel.pk).held == 1
    assert level(simulator, channel.slug, "OFFER-1") == 1
    seen = health(api, channel)
    assert (seen["remaining"], seen["listings_spent"], seen["held_back"], seen["reserve_used"]) == (0, 1, 1, 2)
    # then the next day the held change goes out, on a fresh budget
    next_day(simulator, channel)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 0
    assert budget(channel, sku).used == 1 and budget(channel, sku).day == policy.day(timezone.now())
    assert not DirtyPair.objects.filter(channel=channel).exists()
    assert health(api, channel)["held_back"] == 0


def test_ebays_own_refusal_at_its_limit_holds_the_listing_until_the_next_day(api, simulator, make_channel, list_sku,
                                                                             location, sku):
    # given eBay lets this listing be revised twice today (revisions made elsewhere count too)
    channel = make_channel("ebay", retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01})
    ebay_control(simulator, store=channel.slug, revision_limit=2)
    list_sku(channel, sku, n=1)
    stock.stock_receive(sku=sku, location=location, quantity=10)
    channel_push(channel_id=channel.pk)
    stock.stock_sell(sku=sku, location=location, quantity=1)
    channel_push(channel_id=channel.pk)
    assert level(simulator, channel.slug, "OFFER-1") == 9
    # when a third change is refused by eBay for its daily limit
    stock.stock_sell(sku=sku, location=location, quantity=1)
    report = channel_push(channel_id=channel.pk)
    # then it is not a failure: no attempt charged, held until eBay's next day, the listing marked spent
    assert (report.requests, report.held, report.failed) == (1, 1, 0)
    pair = DirtyPair.objects.get(channel=channel)
    assert pair.budget_held and pair.attempts == 0 and "eBay refused" in pair.last_error
    assert pair.next_attempt_at == budget_policy(channel).day_end(timezone.now())
    row = budget(channel, sku)
    assert row.exhausted and row.used == 2  # the refused revision was given back
    attempt = PushAttempt.objects.filter(channel=channel).first()
    assert attempt.outcome == "failed" and attempt.items[0]["held"] is True
    # further changes today send nothing (eBay would refuse them too)
    stock.stock_sell(sku=sku, location=location, quantity=1)
    assert channel_push(channel_id=channel.pk).held == 1
    assert len(sent(simulator, channel.slug)) == 3
    seen = health(api, channel)
    assert (seen["listings_spent"], seen["held_back"]) == (1, 1)
    # the next day the current quantity goes out; nothing was dead-lettered
    next_day(simulator, channel)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 7
    assert not DeadLetter.objects.filter(channel=channel).exists()
    assert not budget(channel, sku).exhausted


def test_a_listing_low_on_budget_is_paced_over_the_rest_of_the_day(simulator, make_channel, list_sku, location, sku):
    # given 10 revisions a day, paced once fewer than 8 are left, near zero meaning 0
    channel = make_channel("ebay", settings={"revisions_per_day": 10, "revision_reserve": 0, "revision_tight": 8,
                                             "revision_low_stock": 0})
    list_sku(channel, sku, n=1)
    stock.stock_receive(sku=sku, location=location, quantity=100)
    for n in range(3):  # 10, 9 and 8 left before each: sent as they come
        if n:
            stock.stock_sell(sku=sku, location=location, quantity=1)
        assert channel_push(channel_id=channel.pk).pushed == 1
    # when 7 are left, the next change waits: one revision per (time left today / 7)
    stock.stock_sell(sku=sku, location=location, quantity=1)
    before = timezone.now()
    assert channel_push(channel_id=channel.pk).held == 1
    pair = DirtyPair.objects.get(channel=channel)
    row = budget(channel, sku)
    end = budget_policy(channel).day_end(before)
    step = (end - before).total_seconds() / 7
    assert "paced" in pair.last_error and pair.next_attempt_at <= end
    assert abs((pair.next_attempt_at - row.last_revision_at).total_seconds() - min(step, (end - row.last_revision_at)
                                                                                    .total_seconds())) < 5
    assert level(simulator, channel.slug, "OFFER-1") == 98
    # a sell-out is not paced: it goes out at once
    stock.stock_sell(sku=sku, location=location, quantity=97)
    assert channel_push(channel_id=channel.pk).pushed == 1
    assert level(simulator, channel.slug, "OFFER-1") == 0


def test_variations_of_one_listing_share_its_budget(simulator, make_channel, location):
    from channels.services import listing_upsert

    channel = make_channel("ebay", settings={"revisions_per_day": 2, "revision_reserve": 0})
    red, blue = SkuFactory(code="TEE-RED"), SkuFactory(code="TEE-BLUE")
    for n, sku in enumerate((red, blue), 1):
        listing_upsert(channel=channel, sku=sku.code, external_id=f"OFFER-{n}", attributes={"listing_id": "1100"})
        stock.stock_receive(sku=sku, location=location, quantity=20)
    assert channel_push(channel_id=channel.pk).pushed == 2  # one call, two revisions of listing 1100
    assert RevisionBudget.objects.get(channel=channel, key="listing:1100").used == 2
    stock.stock_sell(sku=red, location=location, quantity=1)
    assert channel_push(channel_id=channel.pk).held == 1


# ------------------------------------------------------------------------------ health


def test_channel_list_shows_the_budget_of_ebay_channels_only_in_a_constant_number_of_queries(api, make_channel,
                                                                                             list_sku):
    make_channel("ebay", slug="ebay-one")
    make_channel("shopify", slug="shop-one")
    api.get("/api/v1/channels/")  # warm-up: the first request of a key also records its use
    with CaptureQueriesContext(connection) as few:
        body = api.get("/api/v1/channels/").json()
    assert {row["slug"]: row["revision_budget"] is not None for row in body} == {"ebay-one": True, "shop-one": False}
    for n in range(3):
        list_sku(make_channel("ebay", slug=f"ebay-more-{n}"), SkuFactory(code=f"LISTED-{n}"))
    with CaptureQueriesContext(connection) as many:
        body = api.get("/api/v1/channels/").json()
    assert len(many.captured_queries) == len(few.captured_queries)
    budgets = {row["slug"]: row["revision_budget"] for row in body}
    assert budgets["ebay-more-0"]["listings"] == 1 and budgets["ebay-more-0"]["remaining"] == 250
    assert budgets["shop-one"] is None
