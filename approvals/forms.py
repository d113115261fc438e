from __future__ import annotations

import json
from typing import Any

from django import forms

from foundation import jsonvalues


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
            value = json.loads(text, parse_constant=_not_a_number)
            jsonvalues.check(value, ("payload",))
        except jsonvalues.BadValue as exc:
            raise forms.ValidationError(f"Not saved: {exc}.") from None
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}).") from None
        except RecursionError:
            raise forms.ValidationError("Not valid JSON: nested too deep.") from None
        return value


def _not_a_number(name: str) -> float:
    # NaN and Infinity are not JSON; refused by name rather than parsed into a float.
    raise jsonvalues.BadValue(("payload",), f"{name} is not a JSON number")


class CommentForm(forms.Form):
    comment = forms.CharField(max_length=5000)
