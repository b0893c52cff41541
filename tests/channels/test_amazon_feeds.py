"""Amazon pushes over real HTTP against the simulator: patchListingsItem (merge) for a few SKUs,
paced to the usage plan; a JSON_LISTINGS_FEED for many (document upload, createFeed, getFeed
polled from beat, the processing report), its per-SKU errors retried or dead-lettered, its SKUs
held while it is in flight, FATAL and timed-out feeds sent again."""

from __future__ import annotations

import json
import time

import pytest
import requests
from django.utils import timezone

from channels.models import ChannelSkuState, DeadLetter, DirtyPair, PendingFeed, PushAttempt
from channels.propagation import channel_mark_all, channel_push, dead_letter_retry, feeds_poll
from inventory import services as stock
from tests.channels.conftest import external_id
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db

FEEDS = "/feeds/2021-06-30"


def levels(simulator, store: str) -> dict:
    return simulator.state.levels(store)["levels"]


def paths(simulator, store: str) -> list[tuple[str, str]]:
    return [(r["method"], r["path"]) for r in simulator.state.requests_for(store)]


def amazon_control(simulator, **body) -> dict:
    answer = requests.post(f"{simulator.url}/_sim/amazon", json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()


def due_now(channel) -> None:
    DirtyPair.objects.filter(channel=channel).update(next_attempt_at=timezone.now())


def poll(channel):
    PendingFeed.objects.filter(channel=channel, status="pending").update(next_poll_at=timezone.now())
    return feeds_poll(channel_id=channel.pk)


@pytest.fixture
def amazon(make_channel, list_sku, location):
    """An Amazon channel with `count` listed SKUs, stock 10 + n each."""

    def make(count: int, **overrides):
        channel = make_channel("amazon", **overrides)
        skus = [SkuFactory(code=f"AZ-{n}") for n in range(count)]
        for n, sku in enumerate(skus):
            list_sku(channel, sku, n=n)
            stock.stock_receive(sku=sku, location=location, quantity=10 + n)
        return channel, skus

    return make


def test_a_few_skus_are_patched_with_merge_at_most_five_per_second(simulator, amazon):
    # given 8 changed SKUs (below the feed threshold) and a channel limit far above Amazon's
    channel, skus = amazon(8)
    started = time.monotonic()
    report = channel_push(channel_id=channel.pk)
    elapsed = time.monotonic() - started
    # then one patchListingsItem per SKU, merging the DEFAULT quantity
    assert report.pushed == 8 and report.requests == 8
    patches = simulator.state.store(channel.slug).details["patches"]
    assert [(p["ops"], p["quantity"]) for p in patches] == [(["merge"], 10 + n) for n in range(8)]
    assert levels(simulator, channel.slug) == {external_id("amazon", n, ""): 10 + n for n in range(8)}
    # paced by the usage plan (5 requests/s, burst 5): the 3 requests after the burst wait for
    # tokens (at the channel's own 1,000/s the 8 would take a few milliseconds)
    at = [r["at"] for r in simulator.state.requests_for(channel.slug)]
    assert elapsed >= 0.45 and at[-1] - at[0] >= 0.45
    assert not any(path.startswith(FEEDS) for _method, path in paths(simulator, channel.slug))


def test_many_skus_go_as_one_feed_whose_per_sku_errors_are_retried_then_dead_lettered(simulator, amazon):
    from devtools.simulator import Faults

    # given 8 changed SKUs, a feed threshold of 5, and a feed report refusing two of them
    channel, skus = amazon(8, settings={"feed_threshold": 5},
                           retry={"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.01})
    amazon_control(simulator, store=channel.slug, feeds={"in_queue_polls": 1, "in_progress_polls": 1, "gzip": True,
                                                         "errors": {"SELLER-3": "'[merchant_shipping_group]' missing"}})
    simulator.state.faults[channel.slug] = Faults(item_errors={"SELLER-5"})  # refused by patches too
    # when they are pushed: one feed (createFeedDocument, upload, createFeed), nothing applied yet
    report = channel_push(channel_id=channel.pk)
    assert (report.requests, report.submitted, report.pushed, report.failed) == (1, 8, 0, 0)
    assert paths(simulator, channel.slug) == [("POST", f"{FEEDS}/documents"),
                                              ("PUT", paths(simulator, channel.slug)[1][1]),
                                              ("POST", f"{FEEDS}/feeds")]
    assert paths(simulator, channel.slug)[1][1].startswith("/amazon-documents/")
    feed = PendingFeed.objects.get(channel=channel)
    assert feed.status == "pending" and feed.sku_count == 8
    assert [(i["sku"], i["quantity"]) for i in feed.items] == [(f"AZ-{n}", 10 + n) for n in range(8)]
    assert PushAttempt.objects.get(channel=channel).outcome == "pending"
    assert levels(simulator, channel.slug) == {}
    # the uploaded document is a JSON listings feed of PATCH messages
    submitted = amazon_control(simulator, store=channel.slug)["submitted"]
    assert submitted == [{"feedId": feed.reference, "processingStatus": "IN_QUEUE", "messages": 8}]
    # while the feed is processed its SKUs are neither sent again nor settled
    assert channel_push(channel_id=channel.pk).requests == 0
    pairs = DirtyPair.objects.filter(channel=channel)
    assert pairs.count() == 8 and all(p.next_attempt_at > timezone.now() and p.attempts == 0 for p in pairs)
    # polled from beat: IN_QUEUE, IN_PROGRESS, then DONE with the processing report (GZIP)
    assert poll(channel).processing == 1
    assert PendingFeed.objects.get(pk=feed.pk).last_status == "IN_QUEUE"
    assert poll(channel).processing == 1
    done = poll(channel)
    assert (done.resolved, done.acknowledged, done.failed) == (1, 6, 2)
    feed.refresh_from_db()
    assert feed.status == "done" and feed.summary["accepted"] == 6 and set(feed.summary["errors"]) == {"AZ-3", "AZ-5"}
    # the accepted SKUs are acknowledged exactly once; the refused ones are charged one attempt
    shown = levels(simulator, channel.slug)
    assert shown == {external_id("amazon", n, ""): 10 + n for n in (0, 1, 2, 4, 6, 7)}
    assert ChannelSkuState.objects.get(channel=channel, sku=skus[0]).last_pushed == 10
    assert not ChannelSkuState.objects.filter(channel=channel, sku=skus[3], last_pushed__isnull=False).exists()
    waiting = {p.sku.code: p for p in DirtyPair.objects.filter(channel=channel).select_related("sku")}
    assert set(waiting) == {"AZ-3", "AZ-5"}
    assert waiting["AZ-3"].attempts == 1 and "merchant_shipping_group" in waiting["AZ-3"].last_error
    result = PushAttempt.objects.get(channel=channel, purpose="feed")
    assert result.outcome == "partial" and result.sku_count == 8
    # the retries go as patches (2 SKUs, below the threshold): one lands, one is dead-lettered
    due_now(channel)
    retry = channel_push(channel_id=channel.pk)
    assert (retry.pushed, retry.failed, retry.dead_lettered) == (1, 1, 1)
    assert levels(simulator, channel.slug)[external_id("amazon", 3, "")] == 13
    letter = DeadLetter.objects.get(channel=channel)
    assert (letter.sku, letter.attempts) == (skus[5], 2)
    assert not DirtyPair.objects.filter(channel=channel).exists()
    assert poll(channel).polled == 0  # nothing left to poll


def test_a_change_while_the_feed_is_in_flight_is_pushed_after_its_result(simulator, amazon, location):
    channel, skus = amazon(3, settings={"feed_threshold": 3})
    amazon_control(simulator, store=channel.slug, feeds={"in_queue_polls": 0, "in_progress_polls": 0})
    assert channel_push(channel_id=channel.pk).submitted == 3
    # a sale and an operator's forced re-push while the feed is processed: held, not sent
    stock.stock_sell(sku=skus[1], location=location, quantity=4)
    channel_mark_all(channel=channel, force=True)
    held = channel_push(channel_id=channel.pk)
    assert (held.requests, held.held) == (0, 3)
    # an operator's retry of an old dead letter of one of them is queued behind the feed, not sent
    letter = DeadLetter.objects.create(channel=channel, sku=skus[2], quantity=1, attempts=8, first_error="old",
                                       last_error="old", first_failed_at=timezone.now(),
                                       last_failed_at=timezone.now())
    retried = dead_letter_retry(dead_letter=letter)
    assert retried.queued and not retried.ok and "feed" in retried.error
    assert len(simulator.state.requests_for(channel.slug)) == 3  # still only the feed's three
    # the feed lands; then the newer quantity goes out (the others show what the feed just set)
    assert poll(channel).acknowledged == 3
    assert levels(simulator, channel.slug)[external_id("amazon", 1, "")] == 11
    report = channel_push(channel_id=channel.pk)
    assert (report.pushed, report.skipped, report.submitted) == (1, 2, 0)
    assert levels(simulator, channel.slug)[external_id("amazon", 1, "")] == 7
    assert ChannelSkuState.objects.get(channel=channel, sku=skus[1]).last_pushed == 7


def test_a_fatal_feed_fails_every_sku_which_is_then_sent_again(simulator, amazon):
    channel, skus = amazon(4, settings={"feed_threshold": 2}, retry={"base_delay": 0.01, "max_delay": 0.01})
    amazon_control(simulator, store=channel.slug, feeds={"in_queue_polls": 0, "in_progress_polls": 0, "fatal_next": 1})
    channel_push(channel_id=channel.pk)
    fatal = poll(channel)
    assert (fatal.resolved, fatal.failed, fatal.acknowledged) == (1, 4, 0)
    assert PendingFeed.objects.get(channel=channel).status == "failed"
    assert levels(simulator, channel.slug) == {}
    assert all(p.attempts == 1 and "FATAL" in p.last_error for p in DirtyPair.objects.filter(channel=channel))
    # the retry is a new feed, which lands
    due_now(channel)
    assert channel_push(channel_id=channel.pk).submitted == 4
    assert poll(channel).acknowledged == 4
    assert levels(simulator, channel.slug) == {external_id("amazon", n, ""): 10 + n for n in range(4)}
    assert not DirtyPair.objects.filter(channel=channel).exists()


def test_a_feed_without_a_result_in_time_fails_its_skus(simulator, amazon, settings):
    settings.AMAZON_FEED_TIMEOUT_SECONDS = 0
    channel, skus = amazon(2, settings={"feed_threshold": 2}, retry={"base_delay": 0.01, "max_delay": 0.01})
    amazon_control(simulator, store=channel.slug, feeds={"in_queue_polls": 100})
    channel_push(channel_id=channel.pk)
    expired = poll(channel)
    assert (expired.resolved, expired.failed) == (1, 2)
    feed = PendingFeed.objects.get(channel=channel)
    assert feed.status == "expired" and feed.last_status == "IN_QUEUE"
    assert all(p.attempts == 1 and "no result" in p.last_error for p in DirtyPair.objects.filter(channel=channel))


# ------------------------------------------------------------------------------ the simulator speaks the Feeds API


def test_the_simulator_refuses_an_unsigned_upload_and_an_unknown_document(simulator):
    base = simulator.store_url("feeds-direct")
    token = {"x-amz-access-token": "Atza|x"}
    created = requests.post(f"{base}{FEEDS}/documents", json={"contentType": "application/json; charset=UTF-8"},
                            headers=token, timeout=5)
    assert created.status_code == 201
    url = created.json()["url"]
    # S3 signs the Content-Type: another one is refused; no SP-API token is needed
    assert requests.put(url, data=b"{}", headers={"Content-Type": "text/plain"}, timeout=5).status_code == 403
    assert requests.put(url.split("?")[0], data=b"{}", headers={"Content-Type": "application/json; charset=UTF-8"},
                        timeout=5).status_code == 403
    refused = requests.post(f"{base}{FEEDS}/feeds", headers=token, timeout=5, json={
        "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": ["ATVPDKIKX0DER"],
        "inputFeedDocumentId": created.json()["feedDocumentId"]})
    assert refused.status_code == 400 and refused.json()["errors"][0]["code"] == "InvalidInput"
    # a document that is not a listings feed is processed as FATAL, with a report saying why
    body = json.dumps({"header": {"sellerId": "A1"}, "messages": "nope"}).encode()
    assert requests.put(url, data=body, headers={"Content-Type": "application/json; charset=UTF-8"},
                        timeout=5).status_code == 200
    feed_id = requests.post(f"{base}{FEEDS}/feeds", headers=token, timeout=5, json={
        "feedType": "JSON_LISTINGS_FEED", "marketplaceIds": ["ATVPDKIKX0DER"],
        "inputFeedDocumentId": created.json()["feedDocumentId"]}).json()["feedId"]
    statuses = [requests.get(f"{base}{FEEDS}/feeds/{feed_id}", headers=token, timeout=5).json()["processingStatus"]
                for _ in range(3)]
    assert statuses == ["IN_QUEUE", "IN_PROGRESS", "FATAL"]
    assert requests.get(f"{base}{FEEDS}/feeds/nope", headers=token, timeout=5).status_code == 404
