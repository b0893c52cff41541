"""CSV in and out of the admin (docs/analytics.md, "CSV"): streaming exports of the ledger and of
snapshots for a date range, and imports of SKUs and of counts with a per-row report.

Imports go through the services, one transaction per row: a SKU row through
`inventory.catalog.sku_create` / `sku_update` (validated first by the API's own SkuSerializer,
so the admin accepts exactly what the API accepts), a count row through
`inventory.services.stock_adjust(type="count")` (lock, ledger row, stock-change hook). A bad row is
reported with its reason and changes nothing; the good rows are applied.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse

from core.errors import DomainError
from core.parsing import ascii_int
from inventory import catalog, services
from inventory.models import Sku, StockMovement, StockSnapshot
from inventory.serializers import SkuSerializer

MAX_IMPORT_ROWS = 10_000
LEDGER_COLUMNS = ["id", "recorded_at", "occurred_at", "sku", "location", "type", "on_hand_delta", "reserved_delta",
                  "on_hand_after", "reserved_after", "source", "reference", "actor", "event_key"]
SNAPSHOT_COLUMNS = ["bucket", "taken_at", "sku", "location", "on_hand", "reserved", "available", "version",
                    "baseline"]
SKU_COLUMNS = ["code", "name", "safety_stock", "active", "lead_time_days", "reorder_point", "dynamic_safety_stock"]
COUNT_COLUMNS = ["sku", "location", "quantity"]  # and optional "reference"


# ------------------------------------------------------------------------------------------ export


class _Echo:
    def write(self, value: str) -> str:
        return value


def _range(start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00 UTC, the day after end 00:00 UTC): both days included."""
    return (datetime.combine(start, time.min, tzinfo=UTC),
            datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC))


def ledger_rows(*, start: date, end: date) -> Iterator[list[Any]]:
    """Ledger rows recorded in the range, oldest first, streamed from a server-side cursor."""
    lo, hi = _range(start, end)
    qs = (StockMovement.objects.filter(recorded_at__gte=lo, recorded_at__lt=hi).order_by("id")
          .values_list("id", "recorded_at", "occurred_at", "sku__code", "location__code", "type", "on_hand_delta",
                       "reserved_delta", "on_hand_after", "reserved_after", "source", "reference", "actor",
                       "event_key"))
    for row in qs.iterator(chunk_size=2000):
        yield [v.isoformat() if isinstance(v, datetime) else ("" if v is None else v) for v in row]


def snapshot_rows(*, start: date, end: date) -> Iterator[list[Any]]:
    """5-minute snapshot rows whose bucket is in the range, by bucket then position."""
    lo, hi = _range(start, end)
    qs = (StockSnapshot.objects.filter(bucket__gte=lo, bucket__lt=hi).order_by("bucket", "position_id")
          .values_list("bucket", "taken_at", "position__sku__code", "position__location__code", "on_hand",
                       "reserved", "version", "baseline"))
    for bucket, taken_at, sku, location, on_hand, reserved, version, baseline in qs.iterator(chunk_size=2000):
        yield [bucket.isoformat(), taken_at.isoformat(), sku, location, on_hand, reserved,
               max(on_hand - reserved, 0), version, "true" if baseline else "false"]


def csv_stream(header: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


# ------------------------------------------------------------------------------------------ import


@dataclass
class ImportReport:
    applied: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)


def _bool(raw: str) -> bool | None:
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(raw.strip().lower())


def _typed_sku_row(row: dict[str, str]) -> dict[str, Any]:
    """CSV text to the API's JSON types; an empty cell is "not given". Raises ValueError."""
    data: dict[str, Any] = {}
    for name in SKU_COLUMNS:
        raw = (row.get(name) or "").strip() if name != "name" else (row.get(name) or "")
        if raw == "":
            continue
        if name in ("code", "name"):
            data[name] = raw.strip() if name == "code" else raw
        elif name in ("active", "dynamic_safety_stock"):
            value = _bool(raw)
            if value is None:
                raise ValueError(f"{name}: '{raw}' is not true or false")
            data[name] = value
        elif name == "reorder_point" and raw.lower() in ("computed", "null"):
            data[name] = None
        else:
            number = ascii_int(raw)
            if number is None:
                raise ValueError(f"{name}: '{raw}' is not a whole number")
            data[name] = number
    return data


def _errors_text(errors: dict) -> str:
    return "; ".join(f"{name}: {' '.join(str(m) for m in msgs)}" for name, msgs in errors.items())


def _read(file_text: str, required: list[str]) -> tuple[list[tuple[int, dict[str, str]]], str | None]:
    reader = csv.DictReader(io.StringIO(file_text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        return [], f"missing column(s): {', '.join(missing)}"
    rows = [(reader.line_num, row) for row in reader]
    if len(rows) > MAX_IMPORT_ROWS:
        return [], f"at most {MAX_IMPORT_ROWS} rows per file"
    return rows, None


def skus_import(*, file_text: str) -> ImportReport:
    """Create new SKUs and update existing ones (by code), one service call per row."""
    report = ImportReport()
    rows, problem = _read(file_text, ["code"])
    if problem:
        report.errors.append((1, problem))
        return report
    for line, row in rows:
        try:
            data = _typed_sku_row(row)
            code = data.get("code", "")
            existing = Sku.objects.filter(code=code).first() if code else None
            serializer = SkuSerializer(instance=existing, data=data, partial=existing is not None)
            if not serializer.is_valid():
                raise ValueError(_errors_text(serializer.errors))
            values = dict(serializer.validated_data)
            if existing is None:
                catalog.sku_create(**values)
            else:
                values.pop("code", None)
                if values:
                    catalog.sku_update(sku=existing, **values)
        except DomainError as exc:
            report.errors.append((line, f"{exc.code}: {exc.detail}"))
        except ValueError as exc:
            report.errors.append((line, str(exc)))
        else:
            report.applied += 1
    return report


def counts_import(*, file_text: str, actor: str) -> ImportReport:
    """Apply each row as a `count` (absolute on-hand) through stock_adjust."""
    report = ImportReport()
    rows, problem = _read(file_text, COUNT_COLUMNS)
    if problem:
        report.errors.append((1, problem))
        return report
    for line, row in rows:
        sku, location = (row.get("sku") or "").strip(), (row.get("location") or "").strip()
        quantity = ascii_int((row.get("quantity") or "").strip(), maximum=services.MAX_QUANTITY)
        if not sku or not location:
            report.errors.append((line, "sku and location are required"))
            continue
        if quantity is None:
            report.errors.append((line, f"quantity: '{row.get('quantity')}' is not a whole number from 0 to "
                                        f"{services.MAX_QUANTITY}"))
            continue
        try:
            services.stock_adjust(sku=sku, location=location, type="count", quantity=quantity,
                                  context=services.MovementContext(source="admin_csv", actor=actor,
                                                                   reference=(row.get("reference") or "")[:200]))
        except DomainError as exc:
            report.errors.append((line, f"{exc.code}: {exc.detail}"))
        else:
            report.applied += 1
    return report


# ------------------------------------------------------------------------------------------- views


class ExportForm(forms.Form):
    what = forms.ChoiceField(choices=[("ledger", "Ledger"), ("snapshots", "Snapshots (5-minute)")])
    start = forms.DateField(label="From (UTC day)", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To (UTC day, included)", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        if data.get("start") and data.get("end") and data["start"] > data["end"]:
            raise forms.ValidationError("From must not be after To.")
        return data


class ImportForm(forms.Form):
    what = forms.ChoiceField(choices=[("skus", "SKUs (code, name, safety_stock, active, lead_time_days, "
                                               "reorder_point, dynamic_safety_stock)"),
                                      ("counts", "Counts (sku, location, quantity[, reference])")])
    file = forms.FileField()


EXPORT_PERMS = {"ledger": "inventory.view_stockmovement", "snapshots": "inventory.view_stocksnapshot"}
IMPORT_PERMS = {"skus": ("inventory.add_sku", "inventory.change_sku"),
                "counts": ("inventory.change_stockposition",)}


@staff_member_required
def csv_view(request):
    """GET /admin/csv/: the export and import forms; exports stream, imports show their report."""
    export_form = ExportForm(request.GET if "what" in request.GET else None)
    if export_form.is_bound and export_form.is_valid():
        what, start, end = (export_form.cleaned_data[k] for k in ("what", "start", "end"))
        if not request.user.has_perm(EXPORT_PERMS[what]):
            raise PermissionDenied
        rows = ledger_rows(start=start, end=end) if what == "ledger" else snapshot_rows(start=start, end=end)
        header = LEDGER_COLUMNS if what == "ledger" else SNAPSHOT_COLUMNS
        response = StreamingHttpResponse(csv_stream(header, rows), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="{what}-{start}-{end}.csv"'
        return response
    import_form = ImportForm(request.POST or None, request.FILES or None)
    report = None
    if request.method == "POST" and import_form.is_valid():
        what = import_form.cleaned_data["what"]
        if not request.user.has_perms(IMPORT_PERMS[what]):
            raise PermissionDenied
        try:
            text = import_form.cleaned_data["file"].read().decode("utf-8-sig")
        except UnicodeDecodeError:
            import_form.add_error("file", "The file is not UTF-8 text.")
        else:
            if what == "skus":
                report = skus_import(file_text=text)
            else:
                report = counts_import(file_text=text, actor=f"admin:{request.user.get_username()}")
            level = messages.SUCCESS if not report.errors else messages.WARNING
            messages.add_message(request, level, f"{report.applied} row(s) applied, {len(report.errors)} refused.")
    context = {**admin.site.each_context(request), "title": "CSV export and import",
               "export_form": export_form if export_form.is_bound else ExportForm(), "import_form": import_form,
               "report": report}
    return TemplateResponse(request, "admin/csv.html", context)
