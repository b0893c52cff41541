from django.urls import path

from analytics import views

urlpatterns = [
    path("stock/<str:sku>/history/", views.StockHistory.as_view(), name="stock-history"),
    path("analytics/skus/<str:sku>/", views.SkuAnalytics.as_view(), name="analytics-sku"),
    path("analytics/skus/<str:sku>/safety-stock/", views.SafetyStockHistory.as_view(), name="analytics-safety-stock"),
    path("analytics/fast-movers/", views.FastMovers.as_view(), name="analytics-fast-movers"),
    path("analytics/stockout-risk/", views.StockoutRisk.as_view(), name="analytics-stockout-risk"),
    path("alerts/", views.AlertList.as_view(), name="alerts"),
    path("alert-subscriptions/", views.AlertSubscriptionCreate.as_view(), name="alert-subscriptions"),
    path("alert-subscriptions/<str:id>/", views.AlertSubscriptionDetail.as_view(), name="alert-subscription"),
]
