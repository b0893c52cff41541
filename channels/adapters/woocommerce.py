"""WooCommerce adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class WooCommerceAdapter(ChannelAdapter):
    kind = "woocommerce"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
