"""Appeals (обращения): the card of each call, the departments and topics from the region spec, the numbers."""

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from . import calls


class Department(models.Model):
    """A department of the spec (kept in step with it by ``ekc_catalogue``; one taken out is retired)."""

    code = models.CharField(_("Code"), max_length=32, unique=True)
    name = models.CharField(_("Name"), max_length=200)
    register_working_days = models.PositiveSmallIntegerField(_("Registration, working days"), default=3)
    answer_days = models.PositiveSmallIntegerField(_("Answer, days"), default=30)
    near_due_days = models.PositiveSmallIntegerField(_("Near due, days"), default=3)
    workdays = models.CharField(_("Working days of the week"), max_length=20, default="0,1,2,3,4")
    active = models.BooleanField(_("Active"), default=True)

    class Meta:
        ordering = ("name",)
        verbose_name = _("Department")
        verbose_name_plural = _("Departments")

    def __str__(self) -> str:
        return self.name


class Topic(models.Model):
    """A topic of a department's appeals; its code is its identity, so a renamed topic keeps its cards."""

    department = models.ForeignKey(Department, models.PROTECT, related_name="topics", verbose_name=_("Department"))
    code = models.CharField(_("Code"), max_length=64)
    name = models.CharField(_("Name"), max_length=200)
    active = models.BooleanField(_("Active"), default=True)

    class Meta:
        ordering = ("department__name", "name")
        constraints = [models.UniqueConstraint(fields=("department", "code"), name="ekc_topic_code_per_department")]
        verbose_name = _("Topic")
        verbose_name_plural = _("Topics")

    def __str__(self) -> str:
        return self.name


class Holiday(models.Model):
    """A day the region rests (the spec's holidays)."""

    day = models.DateField(unique=True)


class NumberCounter(models.Model):
    """The last sequence number given out in a year (one row per year, raised under its row lock)."""

    year = models.PositiveSmallIntegerField(primary_key=True)
    last = models.PositiveIntegerField(default=0)


class SyncMark(models.Model):
    """How far the sync service has read the queue log (the highest row id it has seen)."""

    name = models.CharField(max_length=32, primary_key=True)
    last_id = models.BigIntegerField(default=0)


class Appeal(models.Model):
    """The card of one call: who called, when, to which department, who answered, what was answered."""

    STATUSES = (
        (calls.ANSWERED, _("Answered")),
        (calls.ABANDONED, _("Abandoned")),
        (calls.MISSED, _("Missed")),
        (calls.AFTER_HOURS, _("After hours")),
    )
    OUTCOMES = (
        ("", _("Not set")),
        ("answered", _("Answered on the call")),
        ("task", _("Task for a department")),
        ("redirected", _("Redirected")),
        ("spam", _("Spam or mistaken call")),
    )

    number = models.CharField(_("Number"), max_length=24, unique=True)
    call_id = models.CharField(_("Call id"), max_length=150, unique=True)
    status = models.CharField(_("Call"), max_length=16, choices=STATUSES)
    department = models.ForeignKey(Department, models.PROTECT, verbose_name=_("Department"))
    node = models.CharField(_("Server"), max_length=64, blank=True)
    caller_number = models.CharField(_("Caller's number"), max_length=32, blank=True)
    contact = models.ForeignKey(settings.PERSONS_CONTACT_MODEL, models.SET_NULL, null=True, blank=True,
                                related_name="+", verbose_name=_("Contact"))
    operator_name = models.CharField(_("Operator"), max_length=200, blank=True)
    operator_extension = models.CharField(_("Operator's extension"), max_length=16, blank=True)
    entered_at = models.DateTimeField(_("Queued at"), null=True, blank=True)
    answered_at = models.DateTimeField(_("Answered at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("Ended at"), null=True, blank=True)
    wait_s = models.PositiveIntegerField(_("Wait, s"), null=True, blank=True)
    duration_s = models.PositiveIntegerField(_("Talk, s"), null=True, blank=True)
    rating = models.PositiveSmallIntegerField(_("Caller's rating"), null=True, blank=True)
    callback_number = models.CharField(_("Callback number"), max_length=32, blank=True)
    callback_dialled_at = models.DateTimeField(_("Callback dialled at"), null=True, blank=True)
    email = models.EmailField(_("Citizen's e-mail"), blank=True,
                              help_text=_("For the letters on the registration and the answer of its tasks"))
    recording = models.CharField(_("Recording"), max_length=255, blank=True)
    topic = models.ForeignKey(Topic, models.PROTECT, null=True, blank=True, verbose_name=_("Topic"))
    answer = models.TextField(_("What was answered"), blank=True)
    outcome = models.CharField(_("Outcome"), max_length=16, choices=OUTCOMES, blank=True)
    created_at = models.DateTimeField(_("Created at"), auto_now_add=True)
    completed_at = models.DateTimeField(_("Card completed at"), null=True, blank=True)
    completed_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                                     related_name="+", verbose_name=_("Completed by"))

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=("caller_number", "-created_at"), name="ekc_appeal_caller")]
        verbose_name = _("Appeal")
        verbose_name_plural = _("Appeals")

    def __str__(self) -> str:
        return self.number

    def get_absolute_url(self) -> str:
        return reverse("ekc_appeals__card", args=(self.number,))


class Task(models.Model):
    """A task to a department (second line) made from a card, with its 59-FZ deadlines on that department's
    working calendar: registered within ``register_working_days`` working days of receipt, answered within
    ``answer_days`` of registration."""

    NEW, REGISTERED, ANSWERED = "new", "registered", "answered"
    STATES = ((NEW, _("Received")), (REGISTERED, _("Registered")), (ANSWERED, _("Answer sent")))

    appeal = models.ForeignKey(Appeal, models.PROTECT, related_name="tasks", verbose_name=_("Appeal"))
    department = models.ForeignKey(Department, models.PROTECT, related_name="tasks", verbose_name=_("Department"))
    responsible = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+",
                                    verbose_name=_("Responsible"))
    question = models.TextField(_("Question for the department"))
    state = models.CharField(_("State"), max_length=16, choices=STATES, default=NEW)
    received_on = models.DateField(_("Received on"))
    registration_due = models.DateField(_("Register by"))
    registered_on = models.DateField(_("Registered on"), null=True, blank=True)
    answer_due = models.DateField(_("Answer by"))
    answered_at = models.DateTimeField(_("Answered at"), null=True, blank=True)
    answer = models.TextField(_("Answer to the citizen"), blank=True)
    created_at = models.DateTimeField(_("Created at"), auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True,
                                   related_name="+", verbose_name=_("Created by"))

    class Meta:
        ordering = ("answer_due", "id")
        indexes = [models.Index(fields=("department", "state"), name="ekc_task_department_state")]
        verbose_name = _("Task")
        verbose_name_plural = _("Tasks")

    def __str__(self) -> str:
        return f"{self.appeal.number}/{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("ekc_appeals__task", args=(self.pk,))

    @classmethod
    def deadline(cls, state: str, registration_due, answer_due):
        """The deadline that matters now: registration until registered, then the answer; None once answered."""
        if state == cls.NEW:
            return registration_due
        return answer_due if state == cls.REGISTERED else None

    @property
    def due(self):
        return self.deadline(self.state, self.registration_due, self.answer_due)


class Mail(models.Model):
    """A letter to the citizen about a task (registered, answered), sent by the sync service through the
    region's mail relay and retried until the relay takes it; one per task and kind."""

    REGISTERED, ANSWERED = "registered", "answered"

    task = models.ForeignKey(Task, models.PROTECT, related_name="mails")
    kind = models.CharField(max_length=16, choices=((REGISTERED, _("Registered")), (ANSWERED, _("Answer sent"))))
    recipient = models.EmailField()
    subject = models.CharField(max_length=200)
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=("task", "kind"), name="ekc_mail_once_per_task_and_kind")]
        indexes = [models.Index(fields=("sent_at",), name="ekc_mail_unsent")]
