"""The admin dashboard (docs/analytics.md, "Admin dashboard"): key figures, a stock-history chart
drawn as server-side SVG (no JavaScript, no CDN), fast movers, stockout risk and open alerts.
Staff only; every number comes from the selectors the API answers with."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.template.response import TemplateResponse
from django.utils import timezone

from analytics import selectors
from analytics.models import Alert, AlertDelivery
from channels.models import DeadLetter
from core.errors import NotFound
from core.sql import sql_compose
from ingestion.models import InboundEvent, OversellIncident
from inventory.models import Sku

# Events per minute are counted over the newest rows by id (an index scan of at most this many
# rows), not by a scan of `received_at` (not indexed): the figure saturates at 1,000 a minute.
EVENT_WINDOW_MINUTES = 5
EVENT_SCAN_LIMIT = 5000
CHART_W, CHART_H, PAD = 640, 200, 32


def key_figures(*, now) -> dict[str, Any]:
    """Events per minute (last 5 minutes), oversells today, dead letters (channel pushes and
    alert deliveries), low-stock and open alerts."""
    with connection.cursor() as cursor:
        cursor.execute(sql_compose(
            "SELECT count(*) FROM (SELECT received_at FROM {t} ORDER BY id DESC LIMIT %s) newest "
            "WHERE received_at >= %s", t=InboundEvent._meta.db_table),
            [EVENT_SCAN_LIMIT, now - timedelta(minutes=EVENT_WINDOW_MINUTES)])
        recent = cursor.fetchone()[0]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "events_per_minute": round(recent / EVENT_WINDOW_MINUTES, 1),
        "oversells_today": OversellIncident.objects.filter(created_at__gte=midnight).count(),
        "dead_letters": DeadLetter.objects.filter(status="open").count()
        + AlertDelivery.objects.filter(status=AlertDelivery.DEAD).count(),
        "low_stock": Alert.objects.filter(status=Alert.OPEN, kind=Alert.LOW_STOCK).count(),
        "open_alerts": Alert.objects.filter(status=Alert.OPEN).count(),
    }


def history_chart(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Polylines (SVG coordinates) of on_hand and available over the points, with axis labels."""
    if not points:
        return {"empty": True, "width": CHART_W, "height": CHART_H}
    top = max(max(p["on_hand"], p["available"]) for p in points) or 1
    n = len(points)

    def xy(i: int, value: int) -> str:
        x = PAD + (CHART_W - 2 * PAD) * (i / (n - 1) if n > 1 else 0.5)
        y = CHART_H - PAD - (CHART_H - 2 * PAD) * value / top
        return f"{x:.1f},{y:.1f}"

    return {
        "empty": False, "width": CHART_W, "height": CHART_H, "pad": PAD, "top": top,
        "bottom_y": CHART_H - PAD, "right_x": CHART_W - PAD,
        "on_hand": " ".join(xy(i, p["on_hand"]) for i, p in enumerate(points)),
        "available": " ".join(xy(i, p["available"]) for i, p in enumerate(points)),
        "first_at": points[0]["at"], "last_at": points[-1]["at"], "count": n,
        "last": points[-1],
    }


@staff_member_required
def dashboard(request):
    """GET /admin/dashboard/?sku=&hours=24: the merchandisers' and operations' home."""
    now = timezone.now()
    hours = request.GET.get("hours", "24")
    hours_n = int(hours) if hours.isascii() and hours.isdigit() and 1 <= int(hours) <= 24 * 90 else 24
    code = request.GET.get("sku") or ""
    open_alerts = list(Alert.objects.filter(status=Alert.OPEN).select_related("sku", "location")
                       .order_by("-opened_at", "-id")[:20])
    if not code:
        first = open_alerts[0].sku.code if open_alerts else Sku.objects.filter(active=True).values_list(
            "code", flat=True).first()
        code = first or ""
    chart, chart_error = None, ""
    if code:
        try:
            history = selectors.stock_history_get(sku_code=code, start=now - timedelta(hours=hours_n), end=now,
                                                  now=now)
            chart = history_chart(history["points"])
        except NotFound:
            chart_error = f"Unknown SKU '{code}'."
    context = {
        **admin.site.each_context(request),
        "title": "Dashboard",
        "figures": key_figures(now=now),
        "sku_code": code, "hours": hours_n, "chart": chart, "chart_error": chart_error,
        "fast_movers": selectors.fast_movers_list(days=7, limit=10, now=now),
        "stockout_risk": selectors.stockout_risk_list(limit=10, now=now),
        "open_alerts": open_alerts,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
