"""JSON and text exactly as PostgreSQL can store them (jsonb, text, varchar).

Python's `json` is more permissive than PostgreSQL: it accepts NaN/Infinity (not JSON; jsonb
refuses them), turns 1e400 into an infinite float (same), decodes "\\ud800" into a lone UTF-16
surrogate (not encodable as UTF-8, refused by the driver and by the JSON renderer), and raises
RecursionError (not ValueError) on a nesting bomb. PostgreSQL also refuses U+0000 (NUL) in any
text or jsonb value, although it is valid JSON and valid Unicode.

Everything here raises ValueError with a short human reason, so callers have one thing to catch.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 128  # marketplace payloads nest < 10 levels; well under Python's recursion limit
NUL = "\x00"
NUL_REPLACEMENT = "\ufffd"  # U+FFFD REPLACEMENT CHARACTER


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def text_problem(text: str) -> str | None:
    """Why PostgreSQL would refuse this string, or None."""
    if NUL in text:
        return "contains a NUL (U+0000) character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode text)"
    return None


def json_parse(raw: bytes | str, *, allow_nul: bool = False, check_text: bool = True):
    """Parse RFC 8259 JSON; raise ValueError with the reason for anything else.

    Refused: syntax errors, undecodable bytes, NaN/Infinity/-Infinity, numbers that overflow a
    float (1e400), nesting deeper than MAX_DEPTH; with `check_text`, strings (values and keys)
    with a lone surrogate, and with NUL unless `allow_nul`.
    """
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: {exc}") from None
    _walk(data, check_text=check_text, allow_nul=allow_nul)
    return data


def _walk(data, *, check_text: bool, allow_nul: bool) -> None:
    """Without recursion: depth, finite numbers and (optionally) storable strings."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            if check_text:
                _text_check(value, allow_nul=allow_nul)
        elif isinstance(value, dict):
            for key, item in value.items():
                if check_text:
                    _text_check(key, allow_nul=allow_nul)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a number is out of range (overflows to infinity)")


def _text_check(text: str, *, allow_nul: bool) -> None:
    problem = text_problem(text.replace(NUL, "") if allow_nul else text)
    if problem:
        raise ValueError(f"a string {problem}")


def json_contains_nul(data) -> bool:
    """Whether any string (value or key) of already-walked JSON contains NUL."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if NUL in value:
                return True
        elif isinstance(value, dict):
            if any(NUL in key for key in value):
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def json_replace_nul(data):
    """A copy with every NUL in strings (values and keys) replaced by U+FFFD. Depth is bounded by
    MAX_DEPTH (json_parse checked it), so recursion is safe."""
    if isinstance(data, str):
        return data.replace(NUL, NUL_REPLACEMENT)
    if isinstance(data, dict):
        return {key.replace(NUL, NUL_REPLACEMENT): json_replace_nul(item) for key, item in data.items()}
    if isinstance(data, list):
        return [json_replace_nul(item) for item in data]
    return data


def text_clean(text: str) -> str:
    """A header-derived string made storable: NUL → U+FFFD, lone surrogates → '?'."""
    text = text.replace(NUL, NUL_REPLACEMENT)
    if text_problem(text):
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text
