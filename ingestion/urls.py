from django.urls import path

from ingestion import views

urlpatterns = [
    path("events/", views.EventListCreate.as_view(), name="events"),
    path("events/reprocess/", views.EventReprocess.as_view(), name="events-reprocess"),
    path("events/<int:pk>/", views.EventDetail.as_view(), name="event-detail"),
    path("events/<int:pk>/reprocess/", views.EventReprocessOne.as_view(), name="event-reprocess"),
    path("oversell-incidents/", views.OversellIncidentList.as_view(), name="oversell-incidents"),
]
