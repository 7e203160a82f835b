"""The tasks' screens: a new task from a card, one task (register, answer), the per-department list of what is
open, near its deadline or past it; and the figures Prometheus scrapes (nginx lets only the monitoring nodes
reach them)."""

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from . import deadlines, tasks
from .access import appeals_view
from .forms import AnswerForm, TaskForm
from .models import Appeal, Department, Task
from .views import card_page

LIST_SIZE = 200
SHOWN = ("open", "near_due", "overdue", "answered")


def mark(task: Task, today) -> str:
    """'overdue', 'near_due' or '' for a task (answered: '')."""
    due = task.due
    return "" if due is None else deadlines.urgency(today, due, task.department.near_due_days)


@appeals_view
@require_POST
def new_task(request, number):
    """A task for a department from the card; the form's errors are shown on the card."""
    appeal = get_object_or_404(Appeal, number=number)
    form = TaskForm(request.POST)
    if not form.is_valid():
        return card_page(request, appeal, task_form=form, status=400)
    task = tasks.create_task(appeal, form.cleaned_data["department"], form.cleaned_data["responsible"],
                             form.cleaned_data["question"], request.user)
    return redirect(f"{appeal.get_absolute_url()}?task={task.pk}#ekc-tasks")


@appeals_view
def task(request, pk):
    """One task: its deadlines; the department registers it, then answers it."""
    item = get_object_or_404(Task.objects.select_related("appeal", "department", "responsible"), pk=pk)
    form = AnswerForm(request.POST if request.POST.get("action") == "answer" else None)
    if request.method == "POST":
        if request.POST.get("action") == "register":
            tasks.register(item.pk)
            return redirect(item)
        if request.POST.get("action") == "answer" and form.is_valid():
            tasks.answer(item.pk, form.cleaned_data["answer"])
            return redirect(item)
    return render(request, "ekc_appeals/task.html", {"task": item, "form": form,
                                                      "mark": mark(item, timezone.localdate())},
                  status=400 if form.errors else 200)


@appeals_view
def task_list(request):
    """The tasks of one department (or all), those past or near their deadline first."""
    today = timezone.localdate()
    departments = Department.objects.filter(active=True)
    code = request.GET.get("department", "")
    shown = request.GET.get("show", "open")
    shown = shown if shown in SHOWN else "open"
    items = Task.objects.select_related("appeal", "department", "responsible")
    if code:
        items = items.filter(department__code=code)
    items = items.filter(state=Task.ANSWERED) if shown == "answered" else items.exclude(state=Task.ANSWERED)
    rows = [(t, mark(t, today)) for t in items.iterator()]
    if shown in ("near_due", "overdue"):
        rows = [(t, m) for t, m in rows if m == shown]
    rows.sort(key=lambda row: (row[1] != "overdue", row[1] != "near_due", row[0].due or today))
    return render(request, "ekc_appeals/tasks.html", {"rows": rows[:LIST_SIZE], "departments": departments,
                                                       "department": code, "shown": shown, "today": today})


@require_GET
def metrics(request):
    return HttpResponse(tasks.metrics_text(), content_type="text/plain; version=0.0.4; charset=utf-8")
