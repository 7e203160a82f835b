"""The appeals' routes (included by ekc's URL configuration under /appeals/)."""

from django.urls import path, re_path

from . import views

urlpatterns = [
    path("", views.appeals, name="ekc_appeals__list"),
    re_path(r"^call/(?P<call_id>[A-Za-z0-9_.+-]{1,150})/?$", views.by_call, name="ekc_appeals__by_call"),
    re_path(r"^(?P<number>[0-9]{2,3}-[0-9]{4}-[0-9]{6,})/?$", views.card, name="ekc_appeals__card"),
]
