"""Listing ids are sent as JSON numbers when they are ASCII digits, as strings otherwise: an
external id "²" (isdigit() True, int() refuses it) used to crash every push of its channel."""

import pytest

from channels.models import PushAttempt
from channels.propagation import channel_push
from inventory import services as stock
from tests.factories import SkuFactory

pytestmark = pytest.mark.django_db


def test_a_superscript_external_id_is_pushed_as_a_string(simulator, make_channel, list_sku, location):
    sku = SkuFactory(code="SUP-2")
    channel = make_channel("bigcommerce")
    list_sku(channel, sku, external="²")
    stock.stock_receive(sku=sku, location=location, quantity=4)

    report = channel_push(channel_id=channel.pk)

    attempt = PushAttempt.objects.get(channel=channel)
    assert (attempt.outcome, attempt.http_status) == ("success", 200), attempt.error
    assert report.pushed == 1
    assert simulator.state.levels(channel.slug)["levels"] == {"²": 4}
