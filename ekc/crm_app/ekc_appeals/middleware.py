"""The CRM speaks the region's language: a user's own choice in their settings, else the spec's ``crm.language``
(never the browser's, which on a ministry's workstations is often English)."""

from django.conf import settings
from django.utils import translation


class RegionLocaleMiddleware:
    """Creme's LocaleMiddleware without the fall-back to the browser's Accept-Language."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        language = getattr(request.user, "language", "") or settings.LANGUAGE_CODE
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()
        response = self.get_response(request)
        response.headers.setdefault("Content-Language", request.LANGUAGE_CODE)
        return response
