"""StandardWebhook adapter."""

from __future__ import annotations

from channels.adapters.base import ChannelAdapter


class StandardWebhookAdapter(ChannelAdapter):
    kind = "webhook"

    # ------------------------------------------------------------ inbound (ingestion) — BEGIN
    # ------------------------------------------------------------ inbound (ingestion) — END

    # ------------------------------------------------------------ outbound (propagation) — BEGIN
    # ------------------------------------------------------------ outbound (propagation) — END
