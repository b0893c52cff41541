"""Post to the real Django admin the way a browser does: read the add/change page's form (and its
inline formsets) as rendered, change some values, post everything back."""

from __future__ import annotations

import json


def _widget_value(value):
    if value is True:
        return "on"
    if value is False or value is None:
        return None  # an unchecked checkbox / empty choice is simply not sent (or "")
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _form_fields(form) -> dict:
    data = {}
    for name, field in form.fields.items():
        value = _widget_value(form[name].value())
        if value is not None:
            data[form.add_prefix(name)] = value
            if field.show_hidden_initial:  # fields with callable defaults render "initial-<name>" too
                data[form.add_initial_prefix(name)] = value
    return data


def admin_form_data(response) -> dict:
    """Everything a browser would post for the page in `response` (a GET of an admin add/change
    view), main form and inline formsets included, unchanged."""
    data = _form_fields(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update(_form_fields(formset.management_form))
        for form in formset.forms:
            data.update(_form_fields(form))
    return data


def admin_post(client, url: str, changes: dict | None = None, *, drop: tuple[str, ...] = ()):
    """GET the admin page at `url`, apply `changes` (field name -> value as posted; a bool sets a
    checkbox), leave out `drop`, POST it, and return the response (302 when saved)."""
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    data = admin_form_data(page)
    for name, value in (changes or {}).items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    for name in drop:
        data.pop(name, None)
    data["_save"] = "Save"
    return client.post(url, data)
