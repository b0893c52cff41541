"""core.sql.sql_models: model instances from composed SQL, read as the ORM reads them."""

import pytest

from core.sql import sql_models
from ingestion.intake import _insert_new, _row
from ingestion.models import InboundEvent

pytestmark = pytest.mark.django_db


def test_instances_equal_the_orms_field_by_field_json_and_bytes_included():
    """A model with JSON fields: their text must be decoded as the ORM decodes it (fails without
    the field converters: the payload comes back a string)."""
    [pk] = _insert_new([_row(source="webhook", dedup_key="sqlm:1", delivery_id="1", payload={"a": [1, "é"]},
                             headers={"X-Test": "1"}, body=b"\x00raw", partition=0)])

    [made] = sql_models(InboundEvent, "WHERE id = %s", [pk])
    read = InboundEvent.objects.get(pk=pk)

    assert made.payload == {"a": [1, "é"]} and made.headers == {"X-Test": "1"} and bytes(made.body) == b"\x00raw"
    for field in InboundEvent._meta.concrete_fields:
        value, expected = getattr(made, field.attname), getattr(read, field.attname)
        if field.name == "body":
            value, expected = bytes(value), bytes(expected)
        assert value == expected, field.name
    assert not made._state.adding and made._state.db == "default"
