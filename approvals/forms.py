from __future__ import annotations

import json
from typing import Any

from django import forms


class DecisionForm(forms.Form):
    verdict = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    comment = forms.CharField(required=False, max_length=5000)
    payload_hash = forms.CharField(max_length=64)
    edited_payload = forms.CharField(required=False, max_length=256 * 1024)

    def clean_edited_payload(self) -> Any:
        text = self.cleaned_data["edited_payload"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}).") from None


class CommentForm(forms.Form):
    comment = forms.CharField(max_length=5000)
