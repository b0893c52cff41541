"""Ebay adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class EbayAdapter(ChannelAdapter):
    kind = "ebay"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
