"""Matching order lines to listings by the channel's other ids (variant_id, product_id, ...): one
indexed statement per channel and batch, whatever the number of listings."""

from __future__ import annotations

import pytest
from django.db import connection

from channels.models import LISTING_ID_ATTRIBUTES, ChannelListing
from ingestion.processing.plan import _listings_by_attribute_sql
from inventory.models import Sku

pytestmark = pytest.mark.django_db


def test_the_attribute_lookup_reads_the_listing_indexes_not_every_listing(shopify):
    # given: a channel with a few thousand listings (a real shop has tens of thousands)
    skus = Sku.objects.bulk_create([Sku(code=f"LOOK-{i}", name="x") for i in range(3000)])
    ChannelListing.objects.bulk_create([
        ChannelListing(channel=shopify, sku=sku, external_id=f"inv-{i}",
                       attributes={"variant_id": str(500_000 + i), "product_id": 900_000 + i})
        for i, sku in enumerate(skus)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE channels_channellisting")

        # when: the lookup of one batch's ids (a string and a JSON number among them) is planned
        params = {"channel": shopify.pk, "ids": ["500007", "900042", "nope"]}
        cursor.execute("EXPLAIN " + _listings_by_attribute_sql(), params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(_listings_by_attribute_sql(), params)
        rows = cursor.fetchall()

    # then: every key's index is read (a rewrite that compares jsonb instead of text would scan
    # the channel's listings), and both the string and the number match by their text
    assert "Seq Scan" not in plan
    for key in LISTING_ID_ATTRIBUTES:
        assert f"listing_attr_{key}" in plan
    assert sorted((sku_id, values[0], values[1]) for sku_id, *values in rows) == [
        (skus[7].pk, "500007", "900007"), (skus[42].pk, "500042", "900042")]
