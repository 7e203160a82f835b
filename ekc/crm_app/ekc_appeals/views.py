"""The operator's screens: the list of cards with the number search, one card with its form, a call's card; and
the answer nginx asks for before it plays a call's recording."""

from functools import cache

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from . import sync
from .access import appeals_view, may_open
from .forms import CardForm, TaskForm
from .models import Appeal

LIST_SIZE = 50


@appeals_view
def appeals(request):
    """The latest cards; a number typed in the search box opens its card."""
    query = request.GET.get("q", "").strip()
    cards = Appeal.objects.select_related("department", "topic")
    if query:
        exact = cards.filter(number=query).first()
        if exact is not None:
            return redirect(exact)
        cards = cards.filter(number__contains=query) | cards.filter(caller_number__contains=query)
    return render(request, "ekc_appeals/list.html", {"cards": cards[:LIST_SIZE], "query": query})


@appeals_view
def card(request, number):
    """One card: the call's facts, its tasks, the caller's earlier appeals, and the form the operator completes."""
    appeal = get_object_or_404(Appeal.objects.select_related("department", "topic", "contact"), number=number)
    form = CardForm(request.POST or None, instance=appeal)
    if request.method == "POST" and form.is_valid():
        saved = form.save(commit=False)
        saved.completed_at = timezone.now()
        saved.completed_by = request.user
        saved.save()
        return redirect(f"{saved.get_absolute_url()}?saved=1")
    return card_page(request, appeal, form=form, status=400 if form.errors else 200)


def card_page(request, appeal: Appeal, *, form: CardForm | None = None, task_form: TaskForm | None = None,
              status: int = 200):
    """The card's page, with the card's form and the new task's form (either may come back with errors)."""
    history = (Appeal.objects.filter(caller_number=appeal.caller_number).exclude(pk=appeal.pk)
               .select_related("department", "topic")[:20] if appeal.caller_number else [])
    task_form = task_form or TaskForm(initial={"department": appeal.department_id, "responsible": request.user.pk})
    return render(request, "ekc_appeals/card.html", {
        "card": appeal, "form": form or CardForm(instance=appeal), "history": history, "task_form": task_form,
        "tasks": appeal.tasks.select_related("department", "responsible").order_by("id"),
        "recording_url": recording_url(appeal), "saved": request.GET.get("saved") == "1"}, status=status)


@cache
def _recordings() -> dict | None:
    """Where the CRM's nginx serves recordings (the catalogue's; a change of it restarts the CRM)."""
    return sync.catalogue().get("recordings")


def recording_url(appeal: Appeal) -> str:
    """The card's player source: the recording of the call on the node that queued it, through the CRM's nginx
    ('' when the region's recordings cannot be played or the card has no node)."""
    recordings = _recordings()
    if not recordings or not appeal.node or not appeal.call_id:
        return ""
    return f"{recordings['path']}/{appeal.node}/{appeal.call_id}"


def may_listen(user) -> bool:
    """Who may listen to a call's recording: whoever may open its card (a role allowed the appeals app)."""
    return may_open(user)


@require_GET
def recording_access(request):
    """nginx's question (auth_request) before it passes a card's player on to the recording's node: 204 when the
    user may listen, 401 without a login, 403 otherwise. Never a redirect to the login page, which nginx would
    take for an error."""
    if not request.user.is_authenticated:
        return HttpResponse(status=401)
    return HttpResponse(status=204 if may_listen(request.user) else 403)


@appeals_view
def by_call(request, call_id):
    """A call's card by the call's id (the screen pop's link); the page waits while the card is being made."""
    appeal = Appeal.objects.filter(call_id=call_id).first()
    if appeal is not None:
        return redirect(appeal)
    return render(request, "ekc_appeals/waiting.html", {"call_id": call_id}, status=202)
