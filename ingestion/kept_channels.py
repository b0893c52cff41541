"""Channels kept in the process for a few seconds: the webhook receipt looks its channel up by
slug (WEBHOOK_CHANNEL_CACHE_SECONDS), the drain a batch's channels by id
(DRAIN_CHANNEL_CACHE_SECONDS); each lookup was a large share of its path's CPU
(docs/performance.md, docs/ingestion.md). A channel saved or deleted in this process, or whose
authoritative locations change, is forgotten by every such cache at once; another process sees
the change within its window. Only found channels are kept; kept channels are read, never changed.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, post_save

from channels.models import Channel

_MAX = 1024  # entries per cache; a full cache starts over
_caches: list[KeptChannels] = []


class KeptChannels:
    def __init__(self, ttl_setting: str):
        self.ttl_setting = ttl_setting
        self._kept: dict[Hashable, tuple[float, Channel]] = {}
        _caches.append(self)

    def get(self, key: Hashable) -> Channel | None:
        """The kept channel, or None if absent or older than the window (then forgotten)."""
        hit = self._kept.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] < float(getattr(settings, self.ttl_setting, 5.0)):
            return hit[1]
        self._kept.pop(key, None)
        return None

    def put(self, key: Hashable, channel: Channel) -> None:
        if float(getattr(settings, self.ttl_setting, 5.0)) <= 0:
            return
        if len(self._kept) >= _MAX:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), channel)


def _forget_all(**_kwargs: object) -> None:
    for kept in _caches:
        kept._kept.clear()


post_save.connect(_forget_all, sender=Channel, dispatch_uid="ingestion.kept_channels_saved")
post_delete.connect(_forget_all, sender=Channel, dispatch_uid="ingestion.kept_channels_deleted")
m2m_changed.connect(_forget_all, sender=Channel.authoritative_locations.through,
                    dispatch_uid="ingestion.kept_channels_authoritative")
