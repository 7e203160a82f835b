"""The appeals app: a card for every call to the contact center, with its number, topic and outcome."""

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AppealsConfig(AppConfig):
    name = "ekc_appeals"
    verbose_name = _("Appeals")
    default_auto_field = "django.db.models.BigAutoField"
