"""The card's form (topic, what was answered, outcome, the citizen's address) and the tasks' forms."""

from django import forms
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _

from .models import Appeal, Department, Task, Topic


def _select(queryset, label, empty_label) -> forms.ModelChoiceField:
    # A plain select: Creme's own widget for foreign keys needs an enumerator registered per field.
    return forms.ModelChoiceField(queryset=queryset, label=label, widget=forms.Select, empty_label=empty_label)


class CardForm(forms.ModelForm):
    topic = _select(Topic.objects.none(), _("Topic"), _("— choose a topic —"))

    class Meta:
        model = Appeal
        fields = ("topic", "answer", "outcome", "email")
        widgets = {"answer": forms.Textarea(attrs={"rows": 5, "cols": 80})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        card = self.instance
        topics = Topic.objects.filter(department=card.department, active=True)
        if card.topic_id:
            topics = topics | Topic.objects.filter(pk=card.topic_id)
        self.fields["topic"].queryset = topics
        self.fields["topic"].widget.attrs["autofocus"] = "autofocus"
        self.fields["outcome"].required = True
        self.fields["outcome"].choices = [c for c in Appeal.OUTCOMES if c[0]]
        self.fields["outcome"].initial = "answered"
        if not card.email and card.contact is not None and getattr(card.contact, "email", ""):
            self.initial["email"] = card.contact.email


class TaskForm(forms.ModelForm):
    department = _select(Department.objects.filter(active=True), _("Department"), None)
    responsible = _select(get_user_model().objects.filter(is_active=True, is_team=False).order_by("username"),
                          _("Responsible"), _("— choose who answers —"))

    class Meta:
        model = Task
        fields = ("department", "responsible", "question")
        widgets = {"question": forms.Textarea(attrs={"rows": 3, "cols": 80})}


class AnswerForm(forms.Form):
    answer = forms.CharField(label=_("Answer to the citizen"), widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
                             max_length=20000, strip=True)
