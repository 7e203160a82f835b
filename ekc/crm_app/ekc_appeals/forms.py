"""The card's one form: topic, what was answered, outcome (everything else comes from the call)."""

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Appeal, Topic


class CardForm(forms.ModelForm):
    # A plain select: Creme's own widget for foreign keys needs an enumerator registered per field.
    topic = forms.ModelChoiceField(queryset=Topic.objects.none(), label=_("Topic"), widget=forms.Select)

    class Meta:
        model = Appeal
        fields = ("topic", "answer", "outcome")
        widgets = {"answer": forms.Textarea(attrs={"rows": 5, "cols": 80})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        card = self.instance
        topics = Topic.objects.filter(department=card.department, active=True)
        if card.topic_id:
            topics = topics | Topic.objects.filter(pk=card.topic_id)
        self.fields["topic"].queryset = topics
        self.fields["topic"].required = True
        self.fields["topic"].empty_label = _("— choose a topic —")
        self.fields["topic"].widget.attrs["autofocus"] = "autofocus"
        self.fields["outcome"].required = True
        self.fields["outcome"].choices = [c for c in Appeal.OUTCOMES if c[0]]
        self.fields["outcome"].initial = "answered"
