from django.urls import path

from channels import views

urlpatterns = [
    path("channels/", views.ChannelListCreate.as_view(), name="channel-list"),
    path("channels/<slug:slug>/", views.ChannelDetail.as_view(), name="channel-detail"),
    path("channels/<slug:slug>/listings/", views.ListingListCreate.as_view(), name="channel-listings"),
    path("channels/<slug:slug>/stock/<str:sku>/", views.ChannelStock.as_view(), name="channel-stock"),
    path("channels/<slug:slug>/resync/", views.ChannelResync.as_view(), name="channel-resync"),
    path("dead-letters/", views.DeadLetterList.as_view(), name="dead-letter-list"),
    path("dead-letters/<str:pk>/retry/", views.DeadLetterRetry.as_view(), name="dead-letter-retry"),
    path("dead-letters/<str:pk>/discard/", views.DeadLetterDiscard.as_view(), name="dead-letter-discard"),
]
