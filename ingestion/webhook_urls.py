from django.urls import path

from ingestion import views

urlpatterns = [
    path("<slug:slug>/", views.webhook_receive, name="webhook-receive"),
]
