"""`simulate_flash_sale`: orders from every demo marketplace at once (webhooks and polled order
APIs), through its own web server, Celery worker and channel simulator; the numbers must match."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_small_flash_sale_ends_with_zero_oversells_and_matching_numbers():
    # when
    out = io.StringIO()
    call_command("simulate_flash_sale", "--orders", "18", "--rate", "12", "--standalone", "--json", "--seed", "3",
                 stdout=out)

    # then
    text = out.getvalue()
    summary = json.loads(text.strip().splitlines()[-1])
    assert summary["settled"] and summary["numbers_match"], text
    assert summary["orders"] == summary["accepted"] == 18
    assert summary["inbound_events"] == {"done": 18} and summary["units_sold"] == 18
    assert summary["oversells"] == 0 and summary["dead_letters"] == {} and summary["channels_off"] == []
    # every marketplace sold, the two polled ones included
    assert set(summary["per_channel"]) == {"demo-shopify", "demo-woocommerce", "demo-bigcommerce", "demo-ebay",
                                           "demo-amazon", "demo-webhook"}
    assert summary["receipt_to_applied_ms"]["polled_p50"] is not None
    assert summary["commit_to_every_channel_ms"]["samples"] == 18
    assert "oversells       0" in text and "numbers match   yes" in text
