"""Amazon adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class AmazonAdapter(ChannelAdapter):
    kind = "amazon"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
