"""The API's JSON parser: stricter than DRF's so that nothing a client sends can reach
PostgreSQL in a shape it refuses (which would surface as a 500).

Refused with 400 `malformed_json`: everything `core.jsonsafe.json_parse` refuses (invalid JSON,
NaN/Infinity, numbers overflowing to infinity, runaway nesting, NUL characters, lone surrogates).
Endpoints that rather reject per item (the events batch) use their own parser on top of it.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DRFJSONParser

from core.jsonsafe import json_parse


class JSONParser(DRFJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            raw = stream.read().decode(encoding) if stream is not None else ""
            return json_parse(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
