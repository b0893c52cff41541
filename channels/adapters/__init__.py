"""Adapter registry: channel kind -> adapter instance."""

from channels.adapters.amazon import AmazonAdapter
from channels.adapters.base import ChannelAdapter
from channels.adapters.bigcommerce import BigCommerceAdapter
from channels.adapters.ebay import EbayAdapter
from channels.adapters.shopify import ShopifyAdapter
from channels.adapters.webhook import StandardWebhookAdapter
from channels.adapters.woocommerce import WooCommerceAdapter

ADAPTERS: dict[str, ChannelAdapter] = {
    adapter.kind: adapter
    for adapter in (ShopifyAdapter(), WooCommerceAdapter(), BigCommerceAdapter(), EbayAdapter(), AmazonAdapter(),
                    StandardWebhookAdapter())
}


def adapter_for(channel) -> ChannelAdapter:
    return ADAPTERS[channel.kind]
