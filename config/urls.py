from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core.views import healthz

# Each app owns its API routes under /api/v1/; see CONTRACT.md for the public surface.
api_v1 = [
    path("", include("inventory.urls")),
    path("", include("reservations.urls")),
    path("", include("ingestion.urls")),
    path("", include("channels.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("healthz/", healthz),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/v1/", include(api_v1)),
    path("webhooks/", include("ingestion.webhook_urls")),
    path("admin/", admin.site.urls),
]

handler400 = "core.errors.handler400"
handler403 = "core.errors.handler403"
handler404 = "core.errors.handler404"
handler500 = "core.errors.handler500"
