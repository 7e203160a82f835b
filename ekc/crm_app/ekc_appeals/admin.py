"""The administrator's view of the appeals' catalogue (the spec fills it; the admin site only shows it)."""

from django.contrib import admin

from .models import Appeal, Department, Topic


@admin.register(Appeal)
class AppealAdmin(admin.ModelAdmin):
    list_display = ("number", "status", "department", "caller_number", "operator_name", "answered_at", "outcome")
    search_fields = ("number", "caller_number")
    list_filter = ("status", "department", "outcome")


admin.site.register(Department)
admin.site.register(Topic)
