"""Who may open the appeals' screens: a logged-in CRM user whose role is allowed the app (Creme's own
credentials; the administrator always)."""

from django.contrib.auth.decorators import login_required, permission_required


def appeals_view(view):
    """A view for users allowed the appeals app; others are sent to log in, or refused (403)."""
    return login_required(permission_required("ekc_appeals", raise_exception=True)(view))


def may_open(user) -> bool:
    """Whether ``user`` may open the cards (and listen to their calls' recordings)."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or (user.role is not None and user.has_perm_to_access("ekc_appeals"))
