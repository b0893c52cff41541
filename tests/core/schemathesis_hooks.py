"""schemathesis hooks for test_openapi_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Three rules of the API are written in the OpenAPI document in words, because JSON Schema cannot
state them: a channel's location references must name locations that exist (a 400
`validation_error` otherwise, pinned by tests/channels/test_channel_api.py), a transfer's
`to_location` must be another location than `location`, and a SKU's `components` are set at
creation, never naming the SKU itself or another bundle (400 `invalid_components` /
`components_immutable`, pinned by tests/inventory/test_bundles.py; positive cases drop them). For
*positive* cases (the ones schemathesis generated as schema-valid and expects to be accepted) this
hook keeps the data inside those rules; schemathesis re-validates the case after the hook. Negative cases are untouched.
"""

from __future__ import annotations

import json
import os

import schemathesis

KNOWN_LOCATIONS: list[str] = json.loads(os.environ.get("STOCKLINE_SCHEMATHESIS_LOCATIONS", "[]"))
CHANNEL_WRITES = {("POST", "/api/v1/channels/"), ("PATCH", "/api/v1/channels/{slug}/")}
ADJUSTMENTS = ("POST", "/api/v1/stock/adjustments/")
SKU_WRITES = {("POST", "/api/v1/skus/"), ("PATCH", "/api/v1/skus/{code}/")}


def _known(code: object, index: int) -> object:
    if isinstance(code, str) and code not in KNOWN_LOCATIONS:
        return KNOWN_LOCATIONS[index % len(KNOWN_LOCATIONS)]
    return code


@schemathesis.hook
def before_call(context, case, kwargs):
    meta = case.meta
    body = case.body
    if meta is None or not meta.generation.mode.is_positive or not isinstance(body, dict) or not KNOWN_LOCATIONS:
        return
    operation = (case.method.upper(), case.operation.path)
    if operation in CHANNEL_WRITES:
        if "default_location" in body:
            body["default_location"] = _known(body["default_location"], 0)
        for field in ("locations", "authoritative_locations"):
            if isinstance(body.get(field), list):
                body[field] = [_known(code, i) for i, code in enumerate(body[field])]
    elif operation in SKU_WRITES:
        body.pop("components", None)
    elif operation == ADJUSTMENTS and body.get("type") == "transfer":
        location, to_location = body.get("location"), body.get("to_location")
        if isinstance(to_location, str) and to_location.strip() == str(location).strip():
            body["to_location"] = next(code for code in KNOWN_LOCATIONS if code != str(location).strip())
