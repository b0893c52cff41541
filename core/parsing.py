"""Reading numbers out of client text (headers, path segments, query parameters, payloads).

`str.isdigit()` is True for "²" and "٣": `int("²")` then raises (a 500 where it was trusted) and
`int("٣")` quietly reads 3. Versions, ids, page numbers and marketplace quantities in this
system are written with the ASCII digits 0-9 only; anything else is not a number. Callers turn a
`None` into their own 4xx (a version is a 400, an id that cannot exist is a 404).
"""

from __future__ import annotations

MAX_BIGINT = 2**63 - 1  # PostgreSQL bigint: a larger id or version cannot exist


def ascii_int(value: object, *, signed: bool = False, minimum: int | None = None,
              maximum: int | None = MAX_BIGINT) -> int | None:
    """The integer `value` spells with ASCII digits (an optional leading "-" when `signed`), or
    None: not a string, empty, other characters (superscripts, other scripts' digits, spaces,
    "+", "_"), or outside [minimum, maximum]. Never raises."""
    if not isinstance(value, str) or not value.isascii():
        return None
    digits = value[1:] if signed and value.startswith("-") else value
    # Length first: int() of thousands of digits is slow, and refused past 4300 digits.
    if not digits.isdigit() or len(digits) > 19:
        return None
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        return None
    return number


def json_int(value: object) -> int:
    """An integer from a JSON document someone else wrote (a marketplace payload): a JSON integer
    (not a boolean, not a float), or a string of ASCII digits with an optional "-", as some APIs
    send ids and counts. Raises ValueError otherwise (the caller's "invalid payload")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = ascii_int(value, signed=True, maximum=None)
    if number is None:
        raise ValueError(f"expected an integer, got {str(value)[:40]!r}")
    return number
