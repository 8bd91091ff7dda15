"""The bad-input corpus: each kind gets its status and stable code, from the app and from gunicorn."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests import service
from tests.conftest import shared_photos
from tests.hardening.answers import assert_json_answer
from tests.hardening.conftest import API_KEY
from tests.hardening.corpus import Case, cases
from tests.hardening.wire import build, exchange, with_header

pytestmark = pytest.mark.usefixtures("watch_workers")

CORPUS = cases(shared_photos()[0].path.read_bytes())
IN_APP = [case for case in CORPUS if case.wire is None]


def test_the_corpus_has_at_least_30_distinct_kinds() -> None:
    names = [case.name for case in CORPUS]
    assert len(set(names)) == len(names) >= 30
    assert sum(case.status >= 400 for case in CORPUS) >= 30


@pytest.mark.parametrize("case", IN_APP, ids=[case.name for case in IN_APP])
def test_the_app_answers_each_kind_with_its_status_and_code(hardened_client: FlaskClient, case: Case) -> None:
    response = hardened_client.open(case.path, method=case.method, headers={**case.headers, "X-API-Key": API_KEY}, data=case.body)
    assert_json_answer(response.status_code, response.headers, response.get_data(), case.status, case.code)


@pytest.mark.parametrize("case", CORPUS, ids=[case.name for case in CORPUS])
def test_the_real_server_answers_each_kind_with_its_status_and_code(live: service.Service, case: Case) -> None:
    request = case.wire or build(case.method, case.path, case.headers, case.body)
    answer = exchange(live.url, with_header(request, "X-API-Key", API_KEY))
    assert answer.status is not None, f"no answer (send error: {answer.send_error})"
    assert_json_answer(answer.status, answer.headers, answer.body, case.status, case.code)
