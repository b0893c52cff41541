"""Push ordering regressions from the exactness review (issue 8, defect 8).

The single-flight push lock lives in Redis and can expire under a stalled holder. Without a fence,
a holder that wakes late delivered an older quantity after a newer holder's, then recorded it as
pushed and settled the outbox row: the channel kept showing the older quantity for good.
"""

from __future__ import annotations

import pytest

from channels.models import ChannelSkuState, DirtyPair
from channels.propagation import base, channel_push, channel_quantities, push, record
from inventory import services as stock
from tests.channels.conftest import external_id
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


def test_a_stalled_push_holder_cannot_record_an_older_quantity(simulator, make_channel, list_sku, location):
    # given a listed SKU with 7 units, claimed by holder A (fence a) who computed 7 ...
    sku = SkuFactory(code="FENCE-1")
    channel = make_channel("shopify")
    list_sku(channel, sku)
    stock.stock_receive(sku=sku, location=location, quantity=7)
    stale_fence = record._fence_issue(channel.pk)
    claimed = push._claim(channel, push.timezone.now())
    assert [c.quantity for c in claimed] == [7]
    listings = {c.sku_id: {"external_id": c.external_id, "attributes": c.attributes} for c in claimed}
    # ... then A stalls; its lock expires; 2 are sold and holder B pushes 5
    stock.stock_sell(sku=sku, location=location, quantity=2)
    assert channel_push(channel_id=channel.pk).pushed == 1
    ext = external_id("shopify", 1, sku.code)
    assert simulator.state.levels(channel.slug)["levels"][ext] == 5

    # when A wakes up: its request (the older 7) reaches the marketplace after B's
    result = push._send(channel, claimed, listings)
    assert simulator.state.levels(channel.slug)["levels"][ext] == 7
    recorded = record._record(channel, claimed, result, base.PushReport(), probe=False,
                                   fence=stale_fence)

    # then A's result is refused, nothing says 7 was pushed, and the pair is queued again
    assert recorded is False
    assert ChannelSkuState.objects.get(channel=channel, sku=sku).last_pushed == 5
    assert DirtyPair.objects.filter(channel=channel, sku=sku, force=True).exists()
    # and the next push puts the current quantity back
    channel_push(channel_id=channel.pk)
    assert simulator.state.levels(channel.slug)["levels"][ext] == 5 == channel_quantities(
        channel=channel, sku_ids=[sku.pk])[sku.pk]


def test_marking_locks_outbox_rows_once_per_transaction(make_channel, list_sku, location, django_assert_num_queries):
    """Waitlist activation and the stock change itself used to mark the outbox in two
    statements (two lock orders in one transaction); now the outbox reaction runs once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reservations.services import reservation_create

    sku = SkuFactory(code="FENCE-2")
    channel = make_channel("shopify")
    list_sku(channel, sku)
    reservation_create(lines=[{"sku": sku.code, "quantity": 2}], waitlist=True)
    with CaptureQueriesContext(connection) as queries:
        stock.stock_receive(sku=sku, location=location, quantity=5)  # fills the waitlist too
    marking = [q for q in queries.captured_queries if "INSERT INTO" in q["sql"] and "channels_dirtypair" in q["sql"]]
    assert len(marking) == 1
