"""Shopify adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class ShopifyAdapter(ChannelAdapter):
    kind = "shopify"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
