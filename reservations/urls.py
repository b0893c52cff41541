from django.urls import path

from reservations import views

urlpatterns = [
    path("reservations/", views.ReservationListCreate.as_view(), name="reservation-list"),
    path("reservations/<str:reservation_id>/", views.ReservationDetail.as_view(), name="reservation-detail"),
    path("reservations/<str:reservation_id>/commit/", views.ReservationCommit.as_view(), name="reservation-commit"),
    path("reservations/<str:reservation_id>/release/", views.ReservationRelease.as_view(),
         name="reservation-release"),
    path("reservations/<str:reservation_id>/extend/", views.ReservationExtend.as_view(), name="reservation-extend"),
]
