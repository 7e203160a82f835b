"""The appeals' routes (included by ekc's URL configuration under /appeals/)."""

from django.urls import path, re_path

from . import task_views, views

urlpatterns = [
    path("", views.appeals, name="ekc_appeals__list"),
    re_path(r"^call/(?P<call_id>[A-Za-z0-9_.+-]{1,150})/?$", views.by_call, name="ekc_appeals__by_call"),
    re_path(r"^(?P<number>[0-9]{2,3}-[0-9]{4}-[0-9]{6,})/?$", views.card, name="ekc_appeals__card"),
    re_path(r"^(?P<number>[0-9]{2,3}-[0-9]{4}-[0-9]{6,})/tasks/new/?$", task_views.new_task,
            name="ekc_appeals__new_task"),
    path("tasks/", task_views.task_list, name="ekc_appeals__tasks"),
    path("tasks/<int:pk>/", task_views.task, name="ekc_appeals__task"),
    path("metrics", task_views.metrics, name="ekc_appeals__metrics"),
    path("recording-access/", views.recording_access, name="ekc_appeals__recording_access"),
]
