"""Batch sizes at each marketplace's documented maximum, over real HTTP against the simulator,
which refuses oversize batches as the real APIs do."""

from __future__ import annotations

import pytest
import requests

from channels.models import ChannelListing, DirtyPair
from channels.propagation import channel_mark_all, channel_push
from inventory.models import Sku

pytestmark = pytest.mark.django_db


def listed(channel, count: int, external, attributes=None) -> None:
    """`count` SKUs listed on the channel, marked for a (forced) push; bulk rows keep setup fast."""
    skus = Sku.objects.bulk_create([Sku(code=f"B-{channel.kind[:3]}-{n}", name=f"B {n}") for n in range(count)])
    ChannelListing.objects.bulk_create([ChannelListing(channel=channel, sku=sku, external_id=external(n),
                                                       attributes=attributes(n) if attributes else {})
                                        for n, sku in enumerate(skus)])
    channel_mark_all(channel=channel, force=True)


def batch_sizes(simulator, store: str, method: str) -> list[int]:
    return [r["items"] for r in simulator.state.requests_for(store) if r["method"] == method]


def test_bigcommerce_sends_2000_variants_per_absolute_adjustment(simulator, make_channel):
    channel = make_channel("bigcommerce")
    listed(channel, 2001, lambda n: str(90000 + n))
    report = channel_push(channel_id=channel.pk)
    assert report.pushed == 2001 and report.failed == 0
    assert batch_sizes(simulator, channel.slug, "PUT") == [2000, 1]
    assert len(simulator.state.levels(channel.slug)["levels"]) == 2001
    assert not DirtyPair.objects.filter(channel=channel).exists()


def test_woocommerce_sends_100_per_batch_and_variations_per_parent(simulator, make_channel):
    channel = make_channel("woocommerce")
    # 150 simple products, and 120 variations of product 7 (their own endpoint, batched alike)
    listed(channel, 270, lambda n: str(1000 + n), lambda n: {"parent_id": 7} if n >= 150 else {})
    report = channel_push(channel_id=channel.pk)
    assert report.pushed == 270 and report.failed == 0
    sent = [(r["path"], r["items"]) for r in simulator.state.requests_for(channel.slug)]
    assert sorted(sent) == sorted([("/wp-json/wc/v3/products/batch", 100), ("/wp-json/wc/v3/products/batch", 50),
                                   ("/wp-json/wc/v3/products/7/variations/batch", 100),
                                   ("/wp-json/wc/v3/products/7/variations/batch", 20)])


def test_oversize_batches_are_refused_whole_as_the_real_apis_do(simulator):
    # eBay bulkUpdatePriceQuantity: 1 to 25 requests
    ebay = requests.post(f"{simulator.store_url('big')}/sell/inventory/v1/bulk_update_price_quantity",
                         headers={"Authorization": "Bearer x"}, timeout=10, json={"requests": [
                             {"sku": f"S{n}", "shipToLocationAvailability": {"quantity": 1}} for n in range(26)]})
    assert ebay.status_code == 400 and ebay.json()["errors"][0]["errorId"] == 25709
    # BigCommerce absolute adjustments: at most 2,000 items
    bigcommerce = requests.put(f"{simulator.store_url('big')}/stores/abc/v3/inventory/adjustments/absolute",
                               headers={"X-Auth-Token": "x"}, timeout=10, json={"reason": "r", "items": [
                                   {"location_id": 1, "variant_id": n, "quantity": 1} for n in range(2001)]})
    assert bigcommerce.status_code == 422 and "2000" in bigcommerce.json()["title"]
    # WooCommerce batches: at most 100 objects (create + update + delete)
    woo = requests.post(f"{simulator.store_url('big')}/wp-json/wc/v3/products/7/variations/batch", auth=("ck", "cs"),
                        timeout=10, json={"update": [{"id": n, "stock_quantity": 1} for n in range(60)],
                                          "delete": list(range(41))})
    assert woo.status_code == 413 and woo.json()["code"] == "woocommerce_rest_request_entity_too_large"
    assert simulator.state.levels("big")["levels"] == {}  # nothing of a refused batch was applied
