from django.conf import settings
from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from analytics.csvio import csv_view
from analytics.dashboard import dashboard
from core.observability.views import metrics
from core.views import healthz
from live.views import storefront

# Each app owns its API routes under /api/v1/; see CONTRACT.md for the public surface.
api_v1 = [
    path("", include("inventory.urls")),
    path("", include("reservations.urls")),
    path("", include("ingestion.urls")),
    path("", include("channels.urls")),
    path("", include("analytics.urls")),
    path("", include("live.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("healthz/", healthz),
    # Prometheus scrapes /metrics (its default path; no trailing slash). Contract section 4.
    path("metrics", metrics, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include(api_v1)),
    path("webhooks/", include("ingestion.webhook_urls")),
    path("storefront/", storefront, name="storefront"),
    # The admin dashboard (staff only; docs/analytics.md), before the admin's own catch-all.
    path("admin/dashboard/", dashboard, name="admin-dashboard"),
    path("admin/csv/", csv_view, name="admin-csv"),
    path("admin/", admin.site.urls),
]

if settings.BENCH_BARE_VIEW:
    # The ceiling `./dev manage bench_http` compares every hot path with (docs/performance.md): a
    # bare Django JSON view behind the same middleware. Mounted only when the benchmark starts
    # the server; never in a deployment.
    def bench_bare(request):
        return JsonResponse({"status": "ok"})

    urlpatterns.append(path("_bench/bare/", bench_bare))

handler400 = "core.errors.handler400"
handler403 = "core.errors.handler403"
handler404 = "core.errors.handler404"
handler500 = "core.errors.handler500"
