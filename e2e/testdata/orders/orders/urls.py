from django.urls import path

from shop import views

urlpatterns = [
    path("", views.index),
    path("health", views.health),
    path("tasks/revision", views.start_revision),
    path("tasks/<str:task_id>", views.task_result),
]
