"""After the soak: hold the database to every answer the clients received, and check the ledger.

Lost means: an event acknowledged with 2xx that is not stored; a stored event still pending after
the settle; an event marked applied whose ledger row is missing; an adjustment answered 201 whose
movements are not in the ledger; a reservation answered 201 that does not exist, or whose
acknowledged commit/release did not stick.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from django.db.models import Count, F, Q

from channels.models import Channel
from ingestion.management.soak.traffic import Namespace, Record
from ingestion.models import InboundEvent, OversellIncident
from inventory.models import StockMovement, StockPosition
from inventory.selectors import ledger_drift
from reservations.models import Reservation

CHUNK = 2000
COVERED_SALE = re.compile(r"applied: sale -0\b")  # taken wholly from its reservation: no sale row


def chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def channel_ids(ns: Namespace) -> dict[str, int]:
    return dict(Channel.objects.filter(slug__in=[ns.shopify, ns.pos]).values_list("slug", "id"))


def expected_keys(ns: Namespace, record: Record) -> dict[str, dict]:
    """dedup_key -> what the client knows of it ({"acked", "expect"})."""
    ids = channel_ids(ns)
    keys = {f"wh:{ids[slug]}:{delivery_id}": entry for (slug, delivery_id), entry in record.webhooks.items()}
    keys.update({f"api:{event_id}": entry for event_id, entry in record.api_events.items()
                 if entry["expect"] != "rejected"})
    return keys


def pending_count(keys: list[str]) -> int:
    return sum(InboundEvent.objects.filter(dedup_key__in=part, status="pending").count() for part in chunks(keys))


@dataclass
class Audit:
    stored: dict = field(default_factory=dict)  # dedup_key -> (status, error_code, last_error, outcome)
    lost: list = field(default_factory=list)  # one sentence each
    failed: Counter = field(default_factory=Counter)  # (error_code, "expected"/"UNEXPECTED")
    failed_samples: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    mismatched: list = field(default_factory=list)  # expected to fail but did not, or the other way round
    drift: list = field(default_factory=list)
    negative: list = field(default_factory=list)
    over_reserved: int = 0
    reservations: Counter = field(default_factory=Counter)
    reservations_left_active: int = 0
    not_committed_by_order: list = field(default_factory=list)
    oversells: int = 0
    lines_checked: int = 0  # applied lines looked up in the ledger by their event key
    covered_checked: int = 0  # orders checked to be covered by the hold made for them
    retried_by_drain: int = 0  # events that took more than one drain attempt (transient errors)
    applied_twice: list = field(default_factory=list)  # one request, two effects: as bad as a loss
    unacknowledged: list = field(default_factory=list)  # applied, but the client never got its answer

    def run(self, ns: Namespace, record: Record, *, since: int) -> Audit:
        """`since`: the highest InboundEvent id before the run (oversell incidents of this run)."""
        keys = expected_keys(ns, record)
        self._events(keys)
        self._ledger_rows()
        self._covered_orders(record, channel_ids(ns))
        self._adjustments(record)
        self._reservations(ns, record, since)
        self._stock(ns, since)
        return self

    def _events(self, keys: dict[str, dict]) -> None:
        for part in chunks(list(keys)):
            for key, status, code, error, outcome, attempts in InboundEvent.objects.filter(
                    dedup_key__in=part).values_list("dedup_key", "status", "error_code", "last_error", "outcome",
                                                    "attempts"):
                self.stored[key] = (status, code, error, outcome)
                self.retried_by_drain += attempts > 1
        for key, entry in keys.items():
            if key not in self.stored:
                if entry["acked"]:
                    self.lost.append(f"{key}: acknowledged with 2xx but not stored")
                continue
            status, code, error, _outcome = self.stored[key]
            self.statuses[status] += 1
            expect = entry["expect"]
            if status == "pending":
                self.lost.append(f"{key}: still pending after the settle ({code or 'no error'}: {error[:200]})")
            elif status == "failed":
                self.failed[(code, "expected" if code == expect else "UNEXPECTED")] += 1
                if code != expect:
                    self.failed_samples.append(f"{key}: failed {code}: {error[:300]}")
            elif expect not in ("ok", "duplicate"):
                self.mismatched.append(f"{key}: ended {status}, expected to fail with {expect}")

    def _ledger_rows(self) -> None:
        """Every line an event's outcome says was applied has its ledger row (by event key)."""
        applied = {}
        for key, (status, _code, _error, outcome) in self.stored.items():
            if status != "done" or not isinstance(outcome, dict):
                continue
            for line_key, result in outcome.items():
                if isinstance(result, str) and result.startswith("applied:") and not COVERED_SALE.match(result):
                    applied[line_key] = key
        found = set()
        for part in chunks(list(applied)):
            found.update(StockMovement.objects.filter(event_key__in=part).values_list("event_key", flat=True))
        self.lost += [f"{event}: line {line} marked applied, no ledger row" for line, event in applied.items()
                      if line not in found]
        self.lines_checked = len(applied)

    def _covered_orders(self, record: Record, ids: dict[str, int]) -> None:
        """An order whose reservation was held for it is covered by that hold, line by line: a line
        sold from free stock as well would take the units twice."""
        for (slug, delivery_id), reservation_id in record.covered_orders.items():
            status, _code, _error, outcome = self.stored.get(f"wh:{ids[slug]}:{delivery_id}", (None, "", "", {}))
            if status != "done":
                continue  # not stored / pending / failed: reported above
            self.covered_checked += 1
            for line, result in (outcome or {}).items():
                if not (isinstance(result, str) and COVERED_SALE.match(result) and "reservation covered" in result):
                    self.applied_twice.append(f"order line {line}: '{result}' although reservation "
                                              f"{reservation_id} held it for this order")

    def _adjustments(self, record: Record) -> None:
        wanted = {m: a["key"] for a in record.adjustments for m in a["movements"]}
        found = set()
        for part in chunks(list(wanted)):
            found.update(StockMovement.objects.filter(id__in=part).values_list("id", flat=True))
        self.lost += [f"adjustment {key}: answered 201 with movement {m}, not in the ledger"
                      for m, key in wanted.items() if m not in found]
        # Every adjustment carries a unique reference: count its ledger rows, answered or not.
        rows = Counter()
        for part in chunks(list(record.adjustment_rows)):
            rows.update(dict(StockMovement.objects.filter(reference__in=part).values("reference")
                             .annotate(n=Count("id")).values_list("reference", "n")))
        acked = {a["reference"] for a in record.adjustments}
        for reference, expected in record.adjustment_rows.items():
            if rows[reference] > expected:
                self.applied_twice.append(f"adjustment {reference}: {rows[reference]} ledger rows for one request "
                                          f"(one application writes {expected})")
            elif rows[reference] and reference not in acked:
                self.unacknowledged.append(f"adjustment {reference}: applied, but the client never got a 2xx")

    def _reservations(self, ns: Namespace, record: Record, since: int) -> None:
        ids = list(record.reservations)
        actual = {}
        for part in chunks(ids):
            actual.update({str(pk): status for pk, status in
                           Reservation.objects.filter(pk__in=part).values_list("pk", "status")})
        for pk, entry in record.reservations.items():
            status = actual.get(pk)
            self.reservations[status or "missing"] += 1
            if status is None:
                self.lost.append(f"reservation {pk}: answered 201, does not exist")
            elif entry["via"] in ("order", "both") and status != "committed":
                self.not_committed_by_order.append(f"reservation {pk}: {status} after its Shopify order was applied")
            elif entry["expect"] in ("committed", "released") and status != entry["expect"]:
                self.lost.append(f"reservation {pk}: {entry['expect']} acknowledged, now {status}")
        # Holds on the soak's SKUs made during the run that no client was told about (a create
        # interrupted by a web server kill, or a second execution of one Idempotency-Key).
        unknown = (Reservation.objects.filter(lines__sku__code__in=ns.skus, created_at__gte=record.started_at)
                   .exclude(pk__in=ids).values_list("pk", "status").distinct())
        self.unacknowledged += [f"reservation {pk}: {status}, created but the client never got a 2xx"
                                for pk, status in unknown]
        self.reservations_left_active = Reservation.objects.filter(
            lines__sku__code__in=ns.skus, created_at__gte=record.started_at, status="active").distinct().count()

    def _stock(self, ns: Namespace, since: int) -> None:
        self.drift = ledger_drift()
        self.negative = list(StockPosition.objects.filter(Q(on_hand__lt=0) | Q(reserved__lt=0))
                             .values_list("sku__code", "location__code", "on_hand", "reserved"))
        self.over_reserved = StockPosition.objects.filter(sku__code__in=ns.skus, reserved__gt=F("on_hand")).count()
        self.oversells = OversellIncident.objects.filter(sku__code__in=ns.skus, inbound_event_id__gt=since).count()

    @property
    def failing(self) -> bool:
        return bool(self.lost or self.drift or self.negative or self.applied_twice)
