"""Schemathesis against /openapi.json: no 5xx, and every answer as the document says.

Schemathesis' pytest plugin does not run under pytest 9 (it reads a removed private attribute), so
each operation's strategy is driven by hypothesis directly.
One check is left out: "schema-valid data is accepted" cannot hold for an upload, since a schema
says "binary", not "a decodable photo", and random bytes are rightly refused with a 415.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Err, Ok

from tests.hardening.conftest import API_KEY

OPENAPI = "/openapi.json"
# One header only: schemathesis checks that a spoilt key is refused, by replacing this header.
KEY = {"Authorization": f"Bearer {API_KEY}"}
BOUNDED = settings(max_examples=25, deadline=timedelta(seconds=10), database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def api_schema(hardened_app: Flask) -> schemathesis.BaseSchema:
    assert hardened_app.test_client().get(OPENAPI, headers=KEY).status_code == 200
    return schemathesis.openapi.from_wsgi(OPENAPI, hardened_app, headers=KEY)


def test_every_documented_operation_answers_without_5xx_and_as_documented(api_schema: schemathesis.BaseSchema) -> None:
    results = list(api_schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)], f"{OPENAPI} has invalid operations"
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert operations, f"{OPENAPI} documents no operation"
    for operation in operations:

        @BOUNDED
        @given(case=operation.as_strategy())
        def answers_as_documented(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=KEY, excluded_checks=[checks.positive_data_acceptance])

        answers_as_documented()
