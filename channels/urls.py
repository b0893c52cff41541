from django.urls import path

from channels import views

urlpatterns = [
    path("channels/", views.ChannelListCreate.as_view(), name="channel-list"),
    path("channels/<slug:slug>/", views.ChannelDetail.as_view(), name="channel-detail"),
    path("channels/<slug:slug>/listings/", views.ListingListCreate.as_view(), name="channel-listings"),
]
