"""Tasks to departments: deadlines on the department's working calendar, the citizen's letters, the figures.

A task's receipt is the day the operator makes it (the region's date). Registration is due
``register_working_days`` working days later; the answer ``answer_days`` after registration (until the task is
registered, counted from its receipt: the earliest the answer can be due). Registering and answering each queue
one letter to the citizen when the card has an address and the region a mail relay; the sync service sends them
(``send_pending``), so a relay that is down delays a letter and never loses it or blocks the operator.
"""

import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from . import deadlines, figures
from .models import Appeal, Department, Holiday, Mail, Task

MAILS_PER_PASS = 10
RETRY_MAX_S = 300


def calendar_of(department: Department) -> deadlines.Calendar:
    """The department's working days less the region's holidays."""
    weekdays = [int(day) for day in department.workdays.split(",") if day]
    return deadlines.Calendar.of(weekdays, set(Holiday.objects.values_list("day", flat=True)))


def create_task(appeal: Appeal, department: Department, responsible, question: str, user) -> Task:
    """A task from a card, with both deadlines; the card's outcome becomes "task" when it had none."""
    received = timezone.localdate()
    calendar = calendar_of(department)
    with transaction.atomic():
        task = Task.objects.create(
            appeal=appeal, department=department, responsible=responsible, question=question, created_by=user,
            received_on=received,
            registration_due=deadlines.registration_due(received, department.register_working_days, calendar),
            answer_due=deadlines.answer_due(received, department.answer_days, calendar))
        if not appeal.outcome:
            Appeal.objects.filter(pk=appeal.pk, outcome="").update(outcome="task")
    return task


def register(task_id: int) -> Task:
    """The department registers the task: the answer is due ``answer_days`` from today; a letter is queued."""
    with transaction.atomic():
        task = Task.objects.select_for_update().select_related("department", "appeal").get(pk=task_id)
        if task.state == Task.NEW:
            task.state, task.registered_on = Task.REGISTERED, timezone.localdate()
            task.answer_due = deadlines.answer_due(task.registered_on, task.department.answer_days,
                                                   calendar_of(task.department))
            task.save(update_fields=["state", "registered_on", "answer_due"])
            _queue_mail(task, Mail.REGISTERED)
    return task


def answer(task_id: int, text: str) -> Task:
    """The department's answer (a task not registered yet is registered with it); a letter is queued."""
    register(task_id)
    with transaction.atomic():
        task = Task.objects.select_for_update().select_related("department", "appeal").get(pk=task_id)
        if task.state == Task.REGISTERED:
            task.state, task.answer, task.answered_at = Task.ANSWERED, text, timezone.now()
            task.save(update_fields=["state", "answer", "answered_at"])
            _queue_mail(task, Mail.ANSWERED)
    return task


def _letter(task: Task, kind: str) -> tuple[str, str]:
    with translation.override(settings.LANGUAGE_CODE):
        number, department = task.appeal.number, task.department.name
        if kind == Mail.REGISTERED:
            subject = _("Your appeal %(number)s is registered") % {"number": number}
            body = _("Your appeal %(number)s has been registered by %(department)s on %(day)s.\n"
                     "The answer is due by %(due)s. Name this number when you call us.\n") % {
                "number": number, "department": department, "day": task.registered_on.strftime("%d.%m.%Y"),
                "due": task.answer_due.strftime("%d.%m.%Y")}
        else:
            subject = _("The answer to your appeal %(number)s") % {"number": number}
            body = _("%(department)s answers your appeal %(number)s:\n\n%(answer)s\n") % {
                "number": number, "department": department, "answer": task.answer}
    return subject, body


def _queue_mail(task: Task, kind: str) -> None:
    if not task.appeal.email or not getattr(settings, "EKC_MAIL_RELAY", ""):
        return
    subject, body = _letter(task, kind)
    Mail.objects.get_or_create(task=task, kind=kind, defaults={
        "recipient": task.appeal.email, "subject": subject, "body": body})


def send_pending() -> int:
    """Send the letters due; a refused or failed one is retried later (doubling the wait up to 5 minutes)."""
    now = timezone.now()
    due = (Mail.objects.filter(sent_at=None).exclude(next_attempt_at__gt=now).order_by("id")[:MAILS_PER_PASS])
    sent = 0
    for mail in due:
        try:
            send_mail(mail.subject, mail.body, settings.DEFAULT_FROM_EMAIL, [mail.recipient])
        except (OSError, smtplib.SMTPException) as error:
            mail.attempts += 1
            mail.last_error = (str(error) or type(error).__name__)[:300]
            mail.next_attempt_at = now + timedelta(seconds=min(2 ** mail.attempts, RETRY_MAX_S))
            mail.save(update_fields=["attempts", "last_error", "next_attempt_at"])
            continue
        mail.sent_at, mail.attempts = timezone.now(), mail.attempts + 1
        mail.save(update_fields=["sent_at", "attempts"])
        sent += 1
    return sent


def metrics_text() -> str:
    """The figures for Prometheus (``figures``), from one query over the tasks not yet answered."""
    rows = (Task.objects.exclude(state=Task.ANSWERED)
            .values_list("department__code", "state", "registration_due", "answer_due", "department__near_due_days"))
    tasks = [figures.OpenTask(code, Task.deadline(state, registration, answer_by), near)
             for code, state, registration, answer_by, near in rows.iterator()]
    departments = Department.objects.filter(active=True).values_list("code", flat=True)
    return figures.exposition(figures.count_tasks(departments, tasks, timezone.localdate()),
                              Mail.objects.filter(sent_at=None).count())
