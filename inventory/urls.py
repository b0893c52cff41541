from django.urls import path

from inventory import views

urlpatterns = [
    path("locations/", views.LocationListCreate.as_view(), name="location-list"),
    path("locations/<str:code>/", views.LocationDetail.as_view(), name="location-detail"),
    path("skus/", views.SkuListCreate.as_view(), name="sku-list"),
    path("skus/<str:code>/", views.SkuDetail.as_view(), name="sku-detail"),
    path("stock/", views.StockBulk.as_view(), name="stock-bulk"),
    path("stock/adjustments/", views.AdjustmentCreate.as_view(), name="stock-adjust"),
    path("stock/<str:sku>/", views.StockDetail.as_view(), name="stock-detail"),
    path("stock/<str:sku>/movements/", views.MovementList.as_view(), name="stock-movements"),
]
