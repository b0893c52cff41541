"""The API's JSON parser: stricter than DRF's so that nothing a client sends can reach
PostgreSQL in a shape it refuses (which would surface as a 500).

Refused with 400 `malformed_json`: invalid JSON, NaN/Infinity and numbers that overflow to
infinity (not JSON; jsonb refuses them), nesting deeper than MAX_DEPTH (a recursion bomb), NUL
characters (text and jsonb columns refuse them) and lone UTF-16 surrogates (not UTF-8).
"""

from __future__ import annotations

import json
import math

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser as DRFJSONParser

MAX_DEPTH = 64


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def json_loads_strict(raw: bytes | str):
    """Parse JSON as the API accepts it; raises ValueError with a human reason otherwise."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    json_check_values(data)
    return data


def json_check_values(data) -> None:
    """Walk without recursion; raise ValueError on depth, NUL or lone surrogates."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError("numbers must be finite (1e400 overflows)")


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise ValueError("strings may not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("strings may not contain lone UTF-16 surrogates") from None


class JSONParser(DRFJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            raw = stream.read().decode(encoding) if stream is not None else ""
            return json_loads_strict(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
