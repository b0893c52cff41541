"""Reads about channels: configuration, health, what each channel shows, dead letters."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import QuerySet

from channels.models import Channel, ChannelListing, ChannelSkuState, DeadLetter, DirtyPair


def channel_get(*, slug: str) -> Channel:
    from core.errors import NotFound

    channel = Channel.objects.filter(slug=slug).first()
    if channel is None:
        raise NotFound(f"Unknown channel '{slug}'.", code="channel_not_found")
    return channel


def channel_backlog(*, channel: Channel) -> int:
    """(channel, SKU) pairs waiting to be pushed (due now, retrying, or held by an open circuit)."""
    return DirtyPair.objects.filter(channel=channel).count()


def channel_dead_letter_count(*, channel: Channel) -> int:
    """Dead letters not yet retried or discarded."""
    return DeadLetter.objects.filter(channel=channel, status=DeadLetter.Status.OPEN).count()


def channel_last_pushed(*, channel: Channel, sku_id: int) -> int | None:
    """The quantity we last pushed to this channel for this SKU (None if never). Ingestion uses
    it to ignore a marketplace's echo of our own push."""
    return (ChannelSkuState.objects.filter(channel=channel, sku_id=sku_id)
            .values_list("last_pushed", flat=True).first())


def listings_for_channel(*, channel: Channel) -> QuerySet[ChannelListing]:
    return ChannelListing.objects.filter(channel=channel).select_related("sku", "channel").order_by("id")


def channel_stock(*, channel: Channel, sku_code: str) -> dict:
    """What the channel should show for a SKU now, and what we last told it."""
    from channels.propagation import channel_quantities
    from inventory.services import sku_resolve

    sku = sku_resolve(sku=sku_code)
    state = ChannelSkuState.objects.filter(channel=channel, sku=sku).first()
    listing = ChannelListing.objects.filter(channel=channel, sku=sku).values_list("external_id", flat=True).first()
    return {
        "sku": sku.code,
        "available": channel_quantities(channel=channel, sku_ids=[sku.pk])[sku.pk],
        "last_pushed": state.last_pushed if state else None,
        "last_pushed_at": state.last_pushed_at if state else None,
        "channel": channel.slug,
        "listed": listing is not None,
        "external_id": listing,
        "pending": DirtyPair.objects.filter(channel=channel, sku=sku).exists(),
        "last_seen": state.last_seen if state else None,
        "last_seen_at": state.last_seen_at if state else None,
    }


def dead_letters_list(*, channel_slug: str | None = None,
                      status: str | None = DeadLetter.Status.OPEN) -> QuerySet[DeadLetter]:
    """Dead letters, newest first; `status=None` for every status."""
    qs = DeadLetter.objects.select_related("channel", "sku").order_by("-id")
    if channel_slug:
        qs = qs.filter(channel=channel_get(slug=channel_slug))
    if status:
        qs = qs.filter(status=status)
    return qs


def dead_letter_get(*, pk: int) -> DeadLetter:
    from core.errors import NotFound

    found = DeadLetter.objects.select_related("channel", "sku").filter(pk=pk).first()
    if found is None:
        raise NotFound(f"Unknown dead letter {pk}.", code="dead_letter_not_found")
    return found


def channels_with_health() -> QuerySet[Channel]:
    """Channels with their backlog and open dead-letter counts in the same query (list views)."""
    from django.db.models import Count, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    backlog = DirtyPair.objects.filter(channel=OuterRef("pk")).values("channel").annotate(n=Count("id")).values("n")
    dead = (DeadLetter.objects.filter(channel=OuterRef("pk"), status=DeadLetter.Status.OPEN)
            .values("channel").annotate(n=Count("id")).values("n"))
    return Channel.objects.annotate(backlog_count=Coalesce(Subquery(backlog), 0),
                                    dead_letter_count=Coalesce(Subquery(dead), 0))


def channels_revision_budgets(*, channels: Iterable[Channel], now: datetime | None = None) -> dict[int, dict]:
    """Health of the per-listing daily revision budget (eBay), for the channels that have one:
    the marketplace day, the budget per listing and its reserve, revisions used and left over the
    channel's listings, listings living on the reserve or spent, and pairs held back (with the
    earliest release). Three queries whatever the number of channels; {} when none has a budget."""
    from django.db.models import Count, Min, TextField, Value
    from django.db.models.fields.json import KeyTextTransform
    from django.db.models.functions import Cast, Coalesce, Concat, NullIf
    from django.utils import timezone

    from channels.models import RevisionBudget
    from channels.propagation import budget_policy

    policies = {c.pk: p for c in channels if (p := budget_policy(c)) is not None}
    if not policies:
        return {}
    now = now or timezone.now()
    ids = sorted(policies)
    text: TextField = TextField()
    key = Coalesce(Concat(Value("listing:", output_field=text),
                          NullIf(KeyTextTransform("listing_id", "attributes"), Value("", output_field=text),
                                 output_field=text), output_field=text),
                   Concat(Value("sku:", output_field=text), Cast("sku_id", text), output_field=text), output_field=text)
    listings = dict(ChannelListing.objects.filter(channel_id__in=ids).annotate(k=key).values("channel_id")
                    .annotate(n=Count("k", distinct=True)).values_list("channel_id", "n"))
    held = {row["channel_id"]: row for row in DirtyPair.objects.filter(
        channel_id__in=ids, budget_held=True, next_attempt_at__gt=now).values("channel_id").annotate(
        n=Count("id"), release=Min("next_attempt_at"))}
    out: dict[int, dict] = {}
    for channel_id, policy in policies.items():
        out[channel_id] = {
            "day": policy.day(now), "per_listing": policy.per_day, "reserve": policy.reserve,
            "low_stock": policy.low_stock, "listings": listings.get(channel_id, 0), "used": 0, "reserve_used": 0,
            "remaining": policy.per_day * listings.get(channel_id, 0), "listings_on_reserve": 0,
            "listings_spent": 0, "held_back": held.get(channel_id, {}).get("n", 0),
            "next_release_at": held.get(channel_id, {}).get("release")}
    rows = (RevisionBudget.objects.filter(channel_id__in=ids).values("channel_id", "day", "used", "reserve_used",
                                                                     "exhausted").annotate(n=Count("id")))
    for row in rows:
        policy, health = policies[row["channel_id"]], out[row["channel_id"]]
        if row["day"] != health["day"]:
            continue  # an earlier day: nothing spent today
        spent = row["exhausted"] or row["used"] >= policy.per_day
        health["used"] += row["used"] * row["n"]
        health["reserve_used"] += row["reserve_used"] * row["n"]
        health["remaining"] -= (policy.per_day if row["exhausted"] else min(row["used"], policy.per_day)) * row["n"]
        health["listings_spent"] += row["n"] if spent else 0
        health["listings_on_reserve"] += row["n"] if not spent and row["used"] >= policy.normal else 0
    for health in out.values():
        health["remaining"] = max(health["remaining"], 0)
    return out
