"""The administrator's view of the appeals' catalogue (the spec fills it; the admin site only shows it)."""

from django.contrib import admin

from .models import Appeal, Department, Mail, Task, Topic


@admin.register(Appeal)
class AppealAdmin(admin.ModelAdmin):
    list_display = ("number", "status", "department", "caller_number", "operator_name", "answered_at", "outcome")
    search_fields = ("number", "caller_number")
    list_filter = ("status", "department", "outcome")


admin.site.register(Department)
admin.site.register(Topic)


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("appeal", "department", "responsible", "state", "registration_due", "answer_due")
    list_filter = ("state", "department")
    search_fields = ("appeal__number",)


@admin.register(Mail)
class MailAdmin(admin.ModelAdmin):
    list_display = ("task", "kind", "recipient", "created_at", "sent_at", "attempts", "last_error")
    list_filter = ("kind",)
