"""Reads about channels. Propagation fills backlog and dead-letter counts."""

from channels.models import Channel, ChannelListing


def channel_get(*, slug: str) -> Channel:
    from core.errors import NotFound

    channel = Channel.objects.filter(slug=slug).first()
    if channel is None:
        raise NotFound(f"Unknown channel '{slug}'.", code="channel_not_found")
    return channel


def channel_backlog(*, channel: Channel) -> int:
    """(channel, SKU) pairs waiting to be pushed."""
    return 0


def channel_dead_letter_count(*, channel: Channel) -> int:
    """Dead letters not yet retried or discarded."""
    return 0


def channel_last_pushed(*, channel: Channel, sku_id: int) -> int | None:
    """The quantity we last pushed to this channel for this SKU (None if never). Ingestion uses
    it to ignore a marketplace's echo of our own push. Filled by propagation."""
    return None


def listings_for_channel(*, channel: Channel):
    return ChannelListing.objects.filter(channel=channel).select_related("sku", "channel").order_by("id")
