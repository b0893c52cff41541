"""BigCommerce adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class BigCommerceAdapter(ChannelAdapter):
    kind = "bigcommerce"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
