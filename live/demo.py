"""The demo storefront's SKUs and API keys.

The page calls the public API from the browser, so it needs keys in the page. Two keys, each
with one scope: `stock:read` for the stream (the only kind allowed in a URL) and
`reservations:write` for the "buy one" button. They are put in the page only in demo mode
(settings.DEMO_MODE: STOCKLINE_DEMO, on in `./dev up`, off by default and in the image); without
it the page asks the visitor for keys and keeps them in the tab's sessionStorage. Keys are
stored hashed, so the plaintexts are kept in the data dir (`storefront-keys.json`, mode 0600,
like the admin password) to serve the same keys across restarts; missing, revoked or unknown to
this database, they are made again (and the old demo keys revoked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction

from core.auth import api_key_create, api_key_from_token
from core.models import ApiKey
from inventory.demo import SKUS as DEMO_SKUS
from inventory.models import Sku

READ_KEY_NAME = "storefront demo (stream)"
WRITE_KEY_NAME = "storefront demo (reservations)"


@dataclass(frozen=True)
class StorefrontKeys:
    read: str
    write: str


def _keys_path() -> Path:
    return settings.DATA_DIR / "storefront-keys.json"


def storefront_keys() -> StorefrontKeys:
    """The demo keys (made when missing). Call only in demo mode: the result goes into a page."""
    path = _keys_path()
    try:
        stored = json.loads(path.read_text())
        keys = StorefrontKeys(read=stored["read"], write=stored["write"])
        read, write = api_key_from_token(keys.read), api_key_from_token(keys.write)
        if read and write and read.scopes == ["stock:read"] and write.scopes == ["reservations:write"]:
            return keys
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    with transaction.atomic():
        ApiKey.objects.filter(name__in=[READ_KEY_NAME, WRITE_KEY_NAME], active=True).update(active=False)
        _read_key, read_plain = api_key_create(name=READ_KEY_NAME, scopes=["stock:read"])
        _write_key, write_plain = api_key_create(name=WRITE_KEY_NAME, scopes=["reservations:write"])
    keys = StorefrontKeys(read=read_plain, write=write_plain)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps({"read": keys.read, "write": keys.write}))
    tmp.chmod(0o600)
    tmp.replace(path)
    return keys


def storefront_keys_seed() -> dict:
    """DEMO_SEED_EXTENSIONS: make the storefront's keys with the demo, in demo mode only."""
    if not settings.DEMO_MODE:
        return {"storefront_keys": "not made (demo mode is off)"}
    storefront_keys()
    return {"storefront_keys": str(_keys_path())}


def storefront_skus(*, codes: list[str] | None = None) -> list[dict]:
    """The SKUs the page shows, in order: the given codes, or the demo catalog's (those that exist)."""
    wanted = codes or [code for code, *_rest in DEMO_SKUS]
    names = dict(Sku.objects.filter(code__in=wanted).values_list("code", "name"))
    return [{"code": code, "name": names[code]} for code in wanted if code in names]
