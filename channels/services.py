"""Channel configuration writes. (Propagation services live in channels/propagation.py.)"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any, Final, TypedDict, cast

from django.db import IntegrityError, transaction

from channels.models import Channel, ChannelListing, DirtyPair
from core.errors import Conflict
from inventory.models import Location, Sku
from inventory.services import sku_resolve


class _Unset(enum.Enum):
    UNSET = enum.auto()


# The default of channel fields not given: a create keeps the model's default, an update leaves
# the field as it is. (None cannot mean that: `default_location=None` clears the location.)
UNSET: Final = _Unset.UNSET


class BufferConfig(TypedDict, total=False):
    """What the channel holds back: `units` or `percent` of the sellable quantity."""

    type: str
    value: int


class RetryConfig(TypedDict, total=False):
    max_attempts: int
    base_delay: float
    max_delay: float


class CircuitConfig(TypedDict, total=False):
    failure_threshold: int
    cooldown_seconds: float


# Nested API objects -> model fields.
_NESTED = {
    "buffer": {"type": "buffer_type", "value": "buffer_value"},
    "retry": {"max_attempts": "retry_max_attempts", "base_delay": "retry_base_delay",
              "max_delay": "retry_max_delay"},
    "circuit": {"failure_threshold": "circuit_failure_threshold", "cooldown_seconds": "circuit_cooldown_seconds"},
}
_M2M = ("locations", "authoritative_locations")


def _given(**fields: object) -> dict[str, object]:
    """The fields a caller gave (not UNSET), in the API's shape, in parameter order."""
    return {key: value for key, value in fields.items() if value is not UNSET}


def _apply(channel: Channel, data: Mapping[str, object]) -> list[tuple[str, object]]:
    m2m = []
    for key, value in data.items():
        if key in _NESTED:
            nested = cast(Mapping[str, object], value)  # BufferConfig, RetryConfig or CircuitConfig
            for sub, field in _NESTED[key].items():
                if sub in nested:
                    setattr(channel, field, nested[sub])
        elif key in _M2M:
            m2m.append((key, value))
        else:
            setattr(channel, key, value)
    return m2m


@transaction.atomic
def channel_create(
    *,
    slug: str,
    name: str,
    kind: str,
    base_url: str | _Unset = UNSET,
    credentials: dict[str, Any] | _Unset = UNSET,
    webhook_secret: str | _Unset = UNSET,
    default_location: Location | None | _Unset = UNSET,
    locations: Iterable[Location] | _Unset = UNSET,
    authoritative_locations: Iterable[Location] | _Unset = UNSET,
    push_enabled: bool | _Unset = UNSET,
    buffer: BufferConfig | _Unset = UNSET,
    zero_below: int | _Unset = UNSET,
    max_quantity: int | None | _Unset = UNSET,
    rate_limit_per_second: float | _Unset = UNSET,
    rate_limit_burst: int | _Unset = UNSET,
    retry: RetryConfig | _Unset = UNSET,
    circuit: CircuitConfig | _Unset = UNSET,
    settings: dict[str, Any] | _Unset = UNSET,
    active: bool | _Unset = UNSET,
) -> Channel:
    """Create a channel from the API's shape (fields not given keep the model's defaults);
    409 `duplicate_channel` on an existing slug."""
    data = _given(slug=slug, name=name, kind=kind, base_url=base_url, credentials=credentials,
                  webhook_secret=webhook_secret, default_location=default_location, locations=locations,
                  authoritative_locations=authoritative_locations, push_enabled=push_enabled, buffer=buffer,
                  zero_below=zero_below, max_quantity=max_quantity, rate_limit_per_second=rate_limit_per_second,
                  rate_limit_burst=rate_limit_burst, retry=retry, circuit=circuit, settings=settings, active=active)
    if Channel.objects.filter(slug=slug).exists():
        raise Conflict(f"Channel '{slug}' already exists.", code="duplicate_channel")
    channel = Channel()
    m2m = _apply(channel, data)
    try:
        with transaction.atomic():
            channel.save()
    except IntegrityError:
        raise Conflict(f"Channel '{slug}' already exists.", code="duplicate_channel") from None
    for key, value in m2m:
        getattr(channel, key).set(value)
    return channel


# Changing these changes what the channel should show, or where it is: re-push its listings.
_REPUSH_FIELDS = {"locations", "buffer", "zero_below", "max_quantity", "push_enabled", "active"}
_RECONNECT_FIELDS = {"base_url", "credentials", "settings", "kind"}


@transaction.atomic
def channel_update(
    *,
    channel: Channel,
    slug: str | _Unset = UNSET,
    name: str | _Unset = UNSET,
    kind: str | _Unset = UNSET,
    base_url: str | _Unset = UNSET,
    credentials: dict[str, Any] | _Unset = UNSET,
    webhook_secret: str | _Unset = UNSET,
    default_location: Location | None | _Unset = UNSET,
    locations: Iterable[Location] | _Unset = UNSET,
    authoritative_locations: Iterable[Location] | _Unset = UNSET,
    push_enabled: bool | _Unset = UNSET,
    buffer: BufferConfig | _Unset = UNSET,
    zero_below: int | _Unset = UNSET,
    max_quantity: int | None | _Unset = UNSET,
    rate_limit_per_second: float | _Unset = UNSET,
    rate_limit_burst: int | _Unset = UNSET,
    retry: RetryConfig | _Unset = UNSET,
    circuit: CircuitConfig | _Unset = UNSET,
    settings: dict[str, Any] | _Unset = UNSET,
    active: bool | _Unset = UNSET,
) -> Channel:
    """Change any field (the slug is the public identifier and stays: `slug` is accepted, as the
    API's body may repeat it, and ignored). Only the fields given are written, so an edit never
    overwrites the health fields propagation maintains concurrently.
    A change to what the channel should show (locations, buffer, `zero_below`, `max_quantity`,
    enabling) re-pushes its listings; a change of where it is (base_url, credentials, settings)
    re-pushes them all."""
    from channels.propagation import channel_mark_all

    data = _given(name=name, kind=kind, base_url=base_url, credentials=credentials, webhook_secret=webhook_secret,
                  default_location=default_location, locations=locations,
                  authoritative_locations=authoritative_locations, push_enabled=push_enabled, buffer=buffer,
                  zero_below=zero_below, max_quantity=max_quantity, rate_limit_per_second=rate_limit_per_second,
                  rate_limit_burst=rate_limit_burst, retry=retry, circuit=circuit, settings=settings, active=active)
    m2m = _apply(channel, data)
    fields: set[str] = set()
    for key, value in data.items():
        if key in _NESTED:
            fields |= {_NESTED[key][sub] for sub in cast(Mapping[str, object], value) if sub in _NESTED[key]}
        elif key not in _M2M:
            fields.add(key)
    channel.save(update_fields=[*sorted(fields), "updated_at"])
    for key, value in m2m:
        getattr(channel, key).set(value)
    if set(data) & (_REPUSH_FIELDS | _RECONNECT_FIELDS) and channel.active and channel.push_enabled:
        channel_mark_all(channel=channel, force=bool(set(data) & _RECONNECT_FIELDS))
    return channel


def listing_upsert(*, channel: Channel, sku: Sku | str, external_id: str, attributes: dict[str, Any] | None = None
                   ) -> tuple[ChannelListing, bool]:
    """Map a SKU to the channel's id. Re-posting the same SKU updates its mapping; an
    external_id already mapped to another SKU is a 409 `duplicate_external_id`."""
    sku_obj = sku_resolve(sku=sku)
    clash = ChannelListing.objects.filter(channel=channel, external_id=external_id).exclude(sku=sku_obj).first()
    if clash:
        raise Conflict(f"external_id '{external_id}' is already mapped to SKU '{clash.sku.code}'.",
                       code="duplicate_external_id")
    try:
        with transaction.atomic():
            listing, created = ChannelListing.objects.update_or_create(
                channel=channel, sku=sku_obj,
                defaults={"external_id": external_id, "attributes": attributes or {}},
            )
    except IntegrityError:
        raise Conflict(f"external_id '{external_id}' is already mapped.", code="duplicate_external_id") from None
    _listing_push(listing)
    return listing, created


@transaction.atomic
def listing_update(*, listing: ChannelListing, sku: Sku | str | None = None, external_id: str | None = None,
                   attributes: dict[str, Any] | None = None) -> ChannelListing:
    """Remap an existing listing (the admin edits listings in place): another SKU, external id or
    attributes; what is not given stays. Pushed like a new listing (forced: the id may be new).
    A SKU that is no longer listed drops its waiting push (nothing addresses it any more).
    409 `duplicate_external_id` when the id is mapped to another SKU of the channel,
    409 `duplicate_listing` when the new SKU is already listed on the channel."""
    sku_obj = sku_resolve(sku=sku) if sku is not None else listing.sku
    external_id = listing.external_id if external_id is None else external_id
    others = ChannelListing.objects.filter(channel_id=listing.channel_id).exclude(pk=listing.pk)
    clash = others.filter(external_id=external_id).select_related("sku").first()
    if clash:
        raise Conflict(f"external_id '{external_id}' is already mapped to SKU '{clash.sku.code}'.",
                       code="duplicate_external_id")
    if others.filter(sku=sku_obj).exists():
        raise Conflict(f"SKU '{sku_obj.code}' is already listed on this channel.", code="duplicate_listing")
    previous_sku_id = listing.sku_id
    listing.sku, listing.external_id = sku_obj, external_id
    if attributes is not None:
        listing.attributes = attributes
    try:
        with transaction.atomic():
            listing.save(update_fields=["sku", "external_id", "attributes", "updated_at"])
    except IntegrityError:
        raise Conflict(f"external_id '{external_id}' is already mapped.", code="duplicate_external_id") from None
    if previous_sku_id != listing.sku_id:
        _pair_forget(channel_id=listing.channel_id, sku_id=previous_sku_id)
    _listing_push(listing)
    return listing


@transaction.atomic
def listing_delete(*, listing: ChannelListing) -> None:
    """Unmap a SKU from the channel. We stop pushing the pair; the channel keeps showing what it
    was last told (docs/propagation.md, known limits). A push still waiting for the pair is
    dropped with it (the drain would settle it without a request anyway)."""
    _pair_forget(channel_id=listing.channel_id, sku_id=listing.sku_id)
    listing.delete()


def _pair_forget(*, channel_id: int, sku_id: int) -> None:
    """Drop the outbox row of a pair the channel no longer lists. Safe against a push in flight:
    its acknowledgement deletes by (id, generation) and simply finds nothing."""
    DirtyPair.objects.filter(channel_id=channel_id, sku_id=sku_id).delete()


def _listing_push(listing: ChannelListing) -> None:
    """A new or remapped listing gets the channel's quantity pushed (forced: the id may be new)."""
    from channels.propagation import channels_wake_on_commit, pairs_mark_dirty

    with transaction.atomic():
        channels_wake_on_commit(pairs_mark_dirty(sku_ids=[listing.sku_id], channel_ids=[listing.channel_id],
                                                 force=True))
