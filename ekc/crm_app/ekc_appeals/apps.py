"""The appeals app: a card for every call to the contact center, with its number, topic and outcome; tasks to
departments. A Creme app with its own credentials: a role sees the cards and tasks once it is allowed the app
(Creme's roles screen lists it as "Appeals")."""

from creme.creme_core.apps import CremeAppConfig
from django.utils.translation import gettext_lazy as _


class AppealsConfig(CremeAppConfig):
    default = True
    name = "ekc_appeals"
    verbose_name = _("Appeals")
    default_auto_field = "django.db.models.BigAutoField"
    dependencies = ["creme.persons"]
    credentials = CremeAppConfig.CRED_REGULAR

    @property
    def url_root(self) -> str:
        """Creme includes each app's routes under its root: the appeals' are under /appeals/."""
        return "appeals/"
