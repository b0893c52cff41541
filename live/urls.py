from django.urls import path

from live import views

urlpatterns = [
    path("stream/stock/", views.stock_stream, name="stock-stream"),
]
