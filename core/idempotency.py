"""Idempotency-Key handling, built once for every mutating endpoint.

Contract (CONTRACT.md §2): same key + same body replays the first response byte for byte with
`Idempotent-Replayed: true` and no second effect; same key + different body is 422
`idempotency_key_reused`; same key while the first is still running is 409
`idempotency_key_in_flight`. Keys are scoped per API key and kept IDEMPOTENCY_TTL_HOURS (>= 24 h).

How: the claim is an INSERT on a unique (api_key, key) row in autocommit, so a concurrent twin
sees it at once. The response is stored after the view's own transaction has committed. A request
that ends in a 5xx or an unexpected exception releases its claim so the client may retry.
A claim left `in_flight` longer than STALE_IN_FLIGHT (its process died) may be taken over.

A process can die after its stock transaction committed and before the answer was stored. So
that a takeover never applies the request twice, every claim carries a `request_key` (stable for
this API key, Idempotency-Key and body) that the stock-changing views hand to their service as an
identity of the effect: adjustments use it as the ledger `event_key` (a re-run replays the first
movement), reservation creation stores it on the reservation (a re-run returns that one). Hence
the takeover window can be short: a minute, above any request's run time.

Claim inside the change (setting IDEMPOTENCY_IN_STATEMENT, the hot paths): a view that sets
`idempotency_deferred` does not claim before it runs. It hands a `PendingClaim` to its service,
whose one-statement change (a sale, a checkout reservation) inserts the claim in its own first
CTE and changes nothing unless that insert succeeded: claim and effect commit together, one
transaction and round trip fewer per request. A concurrent twin's insert waits on the unique
index until the first commits, then finds the key taken. Whenever the change takes another
path (refused, not for the one statement, the key taken) the service calls `settle()` first,
which claims exactly as above (replay, 409, 422, takeover); a 4xx raised before either is
settled in `handle_exception`, so its answer is stored as before. Nothing is changed before the
claim exists, so the order is not observable: the same answers as claiming first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.db import connection
from django.http import HttpResponse
from django.utils import timezone

from core.errors import DomainError
from core.models import IdempotencyRecord
from core.sql import sql_compose

HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
STALE_IN_FLIGHT = timedelta(seconds=60)  # > gunicorn's request timeout; re-runs are safe (above)
KEPT_HEADERS = ("Content-Type", "Location", "ETag")


class Replayed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, response: HttpResponse):
        self.response = response


@dataclass
class Claim:
    record_id: int
    request_key: str  # the identity of this request's effect, for the service (module docstring)


def request_key_for(api_key_id: int | None, key: str, fingerprint: str) -> str:
    digest = hashlib.sha256(f"{api_key_id}:{key}:{fingerprint}".encode()).hexdigest()[:40]
    return f"idem:{digest}"


def _fingerprint(request) -> str:
    raw = request._request.body or b""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        canonical = raw  # not JSON: the raw bytes identify it (the parser will refuse it anyway)
    digest = hashlib.sha256()
    digest.update(request.method.encode() + b" " + request.path.encode() + b"\n")
    digest.update(canonical)
    return digest.hexdigest()


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(bytes(record.response_body or b""), status=record.response_status)
    for name, value in record.response_headers.items():
        response[name] = value
    response[REPLAY_HEADER] = "true"
    return response


@cache
def _claim_sql() -> str:
    return sql_compose(
        "INSERT INTO {table} (api_key_id, key, fingerprint, state, response_headers, created_at) "
        "VALUES (%s, %s, %s, %s, '{{}}'::jsonb, %s) ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id",
        table=IdempotencyRecord._meta.db_table)


def _claim_insert(api_key_id: int | None, key: str, fingerprint: str, now) -> int | None:
    """The claim: one INSERT, committed at once in autocommit (a concurrent twin sees it), that
    does nothing on an existing (api_key, key) row. Returns the new row's id, or None when taken.
    No error on a conflict, hence no savepoint and no extra round trips around it."""
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(), [api_key_id, key, fingerprint, IdempotencyRecord.State.IN_FLIGHT, now])
        row = cursor.fetchone()
    return row[0] if row else None


def _header_key(request, *, required: bool) -> str | None:
    key = request.headers.get(HEADER, "").strip()
    if not key:
        if required:
            raise DomainError(f"This request needs an {HEADER} header.", code="idempotency_key_required")
        return None
    if len(key) > 255:
        raise DomainError(f"{HEADER} must be at most 255 characters.", code="validation_error")
    return key


def idempotency_begin(request, *, required: bool) -> Claim | None:
    key = _header_key(request, required=required)
    if key is None:
        return None
    return _claim(request.auth, key, _fingerprint(request), timezone.now())


def _claim(api_key, key: str, fingerprint: str, now) -> Claim:
    """Claim (api_key, key), or raise: Replayed (its answer), 422 (another body), 409 (running)."""
    expiry = now - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    api_key_id = getattr(api_key, "pk", None)
    for _attempt in range(3):
        record_id = _claim_insert(api_key_id, key, fingerprint, now)
        if record_id is not None:
            return Claim(record_id, request_key_for(api_key_id, key, fingerprint))
        record = IdempotencyRecord.objects.filter(api_key=api_key, key=key).first()
        if record is None:
            continue  # released between our insert and read: claim again
        stale = record.created_at < expiry or (
            record.state == IdempotencyRecord.State.IN_FLIGHT and record.created_at < now - STALE_IN_FLIGHT)
        if stale:
            IdempotencyRecord.objects.filter(pk=record.pk, created_at=record.created_at).delete()
            continue
        if record.fingerprint != fingerprint:
            raise DomainError(
                f"This {HEADER} was already used with a different request body.",
                code="idempotency_key_reused", status=422,
            )
        if record.state == IdempotencyRecord.State.IN_FLIGHT:
            raise DomainError(
                f"A request with this {HEADER} is still being processed; retry shortly.",
                code="idempotency_key_in_flight", status=409,
            )
        raise Replayed(_replay(record))
    raise DomainError(f"Could not claim this {HEADER}; retry.", code="idempotency_key_in_flight", status=409)


def idempotency_finish(claim: Claim, response) -> None:
    if response.status_code >= 500:
        idempotency_abandon(claim)
        return
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()
    from psycopg.types.json import Jsonb

    headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
    with connection.cursor() as cursor:
        cursor.execute(_finish_sql(), [IdempotencyRecord.State.DONE, response.status_code, bytes(response.content),
                                       Jsonb(headers), claim.record_id])


@cache
def _finish_sql() -> str:
    return sql_compose("UPDATE {table} SET state = %s, response_status = %s, response_body = %s, "
                       "response_headers = %s WHERE id = %s", table=IdempotencyRecord._meta.db_table)


def idempotency_abandon(claim: Claim) -> None:
    IdempotencyRecord.objects.filter(pk=claim.record_id, state=IdempotencyRecord.State.IN_FLIGHT).delete()


def idempotency_prune() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted


class PendingClaim:
    """An Idempotency-Key claim a one-statement change inserts itself (module docstring).

    `claim_cte()` is the claim as such a statement's CTE and `params()` its parameters; the
    statement changes nothing unless the CTE returned a row, and then sets `record_id`. `settle()`
    claims the usual way when the change goes elsewhere (it raises what idempotency_begin raises)."""

    def __init__(self, *, api_key, key: str, fingerprint: str, now):
        self.api_key, self.key, self.fingerprint, self.now = api_key, key, fingerprint, now
        self.request_key = request_key_for(getattr(api_key, "pk", None), key, fingerprint)
        self.record_id: int | None = None
        self.refused = False  # settle() raised: the key is someone else's (replay, 409, 422)

    def params(self) -> dict:
        return {"claim_api_key": getattr(self.api_key, "pk", None), "claim_key": self.key,
                "claim_fingerprint": self.fingerprint, "claim_state": IdempotencyRecord.State.IN_FLIGHT,
                "claim_at": self.now}

    @property
    def identity(self) -> tuple[int | None, str]:
        """(API key, Idempotency-Key): two requests with the same one are twins."""
        return getattr(self.api_key, "pk", None), self.key

    def settle(self) -> None:
        if self.record_id is None:
            try:
                self.record_id = _claim(self.api_key, self.key, self.fingerprint, self.now).record_id
            except (Replayed, DomainError):
                self.refused = True
                raise


def claim_to_insert(claim: PendingClaim | None) -> PendingClaim | None:
    """The claim a one-statement change must insert: None when there is none, or when its request
    has settled it already (claimed first: held, nothing to insert)."""
    return claim if claim is not None and claim.record_id is None else None


@cache
def claim_batch_ctes() -> str:
    """`claim AS (...), gated AS (...)` for a statement that makes several requests' changes. It
    needs a `req` CTE with columns claim_api_key, claim_key, claim_fingerprint (NULL: no claim) and
    `n`, the parameters of `claim_batch_params` and `%(now)s`. `gated` is `req`'s rows whose claim
    was inserted or who have none, with `claim_id`. The claims go in key order, so two batches
    never wait for each other's in opposite orders; the statement must read all of `claim` before
    it locks anything (e.g. `(SELECT count(*) FROM claim) >= 0`), so a twin elsewhere holding a
    claim it waits for never waits for a lock it holds."""
    return sql_compose(
        "claim AS (INSERT INTO {table} (api_key_id, key, fingerprint, state, response_headers, created_at) "
        "SELECT claim_api_key, claim_key, claim_fingerprint, %(claim_state)s, '{{}}'::jsonb, %(now)s FROM req "
        "WHERE claim_key IS NOT NULL ORDER BY claim_api_key, claim_key ON CONFLICT (api_key_id, key) DO NOTHING "
        "RETURNING id, api_key_id, key), "
        "gated AS (SELECT r.*, c.id AS claim_id FROM req r LEFT JOIN claim c ON c.key = r.claim_key "
        "AND c.api_key_id IS NOT DISTINCT FROM r.claim_api_key WHERE r.claim_key IS NULL OR c.id IS NOT NULL)",
        table=IdempotencyRecord._meta.db_table)


def claim_batch_params(claims: list[PendingClaim | None]) -> dict:
    """`claim_batch_ctes`' parameters: one entry per request, in order (only claims to insert)."""
    found = [claim_to_insert(claim) for claim in claims]
    return {"claim_state": IdempotencyRecord.State.IN_FLIGHT,
            "claim_api_keys": [c.identity[0] if c else None for c in found],
            "claim_keys": [c.key if c else None for c in found],
            "claim_fingerprints": [c.fingerprint if c else None for c in found]}


@cache
def claim_cte() -> str:
    """`claim AS (...)`: the claim as a statement's CTE; a row (its id) only if the key was free.
    ON CONFLICT waits for a concurrent twin's uncommitted claim, then finds it taken."""
    return sql_compose(
        "claim AS (INSERT INTO {table} (api_key_id, key, fingerprint, state, response_headers, created_at) "
        "VALUES (%(claim_api_key)s, %(claim_key)s, %(claim_fingerprint)s, %(claim_state)s, '{{}}'::jsonb, "
        "%(claim_at)s) ON CONFLICT (api_key_id, key) DO NOTHING RETURNING id)",
        table=IdempotencyRecord._meta.db_table)


class IdempotencyMixin:
    """Add to a DRF APIView. `idempotency_methods` honour the header; `idempotency_required`
    additionally demand it (400 `idempotency_key_required`); `idempotency_deferred` methods get
    `request.idempotency_pending`, a PendingClaim their service settles or inserts itself
    (module docstring; only while IDEMPOTENCY_IN_STATEMENT is on)."""

    idempotency_methods: tuple[str, ...] = ("POST", "PATCH", "PUT", "DELETE")
    idempotency_required: tuple[str, ...] = ()
    idempotency_deferred: tuple[str, ...] = ()

    def initial(self, request, *args, **kwargs):
        self._idempotency_claim = None
        self._idempotency_pending = None
        request.idempotency_pending = None
        super().initial(request, *args, **kwargs)  # authentication and scopes first
        implemented = request.method.lower() in self.http_method_names and hasattr(self, request.method.lower())
        if request.method not in self.idempotency_methods or not implemented:  # not for DRF's 405
            return
        required = request.method in self.idempotency_required
        if request.method in self.idempotency_deferred and settings.IDEMPOTENCY_IN_STATEMENT:
            key = _header_key(request, required=required)
            if key is not None:
                pending = PendingClaim(api_key=request.auth, key=key, fingerprint=_fingerprint(request),
                                       now=timezone.now())
                self._idempotency_pending = request.idempotency_pending = pending
                request.idempotency_request_key = pending.request_key
            return
        self._idempotency_claim = idempotency_begin(request, required=required)
        if self._idempotency_claim is not None:
            request.idempotency_request_key = self._idempotency_claim.request_key

    def _idempotency_settled(self) -> Claim | None:
        """The claim this request holds, if any (a pending one once inserted counts)."""
        pending = self._idempotency_pending
        if self._idempotency_claim is None and pending is not None and pending.record_id is not None:
            self._idempotency_claim = Claim(pending.record_id, pending.request_key)
            self._idempotency_pending = None
        return self._idempotency_claim

    def handle_exception(self, exc):
        if isinstance(exc, Replayed):
            return exc.response
        pending = getattr(self, "_idempotency_pending", None)
        if pending is not None and pending.record_id is None and not pending.refused:
            # Nothing was changed yet (a change claims first): claim now, as if it had claimed in
            # initial(), so this answer is stored, or a replay / 409 / 422 answers instead.
            self._idempotency_pending = None
            response = super().handle_exception(exc)  # an unexpected error re-raises: no claim to release
            if response.status_code < 500:
                try:
                    pending.settle()
                except Replayed as replay:
                    return replay.response
                except DomainError as refusal:
                    return super().handle_exception(refusal)
                self._idempotency_claim = Claim(pending.record_id, pending.request_key)
            return response
        try:
            return super().handle_exception(exc)
        except Exception:
            claim = self._idempotency_settled() if hasattr(self, "_idempotency_claim") else None
            if claim is not None:
                idempotency_abandon(claim)
                self._idempotency_claim = None
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        claim = self._idempotency_settled() if hasattr(self, "_idempotency_claim") else None
        if claim is not None:
            self._idempotency_claim = None
            idempotency_finish(claim, response)
        return response
