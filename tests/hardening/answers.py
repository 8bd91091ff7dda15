"""What every answer to bad input must look like: JSON, a stable code, no internals."""

from __future__ import annotations

import json
from collections.abc import Mapping

from werkzeug.datastructures import Headers
from werkzeug.test import TestResponse

# Signs of a stack trace or of the server's own files leaking into a response.
LEAKS = ("Traceback", 'File "', ".py", "/work/", "/usr/lib", "site-packages", "werkzeug", "gunicorn/")


def assert_no_internals(body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    assert not [leak for leak in LEAKS if leak in text], text[:500]


def assert_json_answer(
    status: int, headers: Mapping[str, str] | Headers, body: bytes, expected_status: int, expected_code: str | None
) -> None:
    """status and code as expected; JSON; nosniff; never a 5xx; nothing internal shown."""
    lower = {name.lower(): value for name, value in headers.items()}
    assert status == expected_status, body[:400]
    assert status < 500
    assert lower.get("content-type", "").startswith("application/json"), lower
    assert lower.get("x-content-type-options") == "nosniff"
    document = json.loads(body)
    if expected_code is None:
        assert document["predictions"], document
    else:
        assert document["error"]["code"] == expected_code, document
        assert isinstance(document["error"]["message"], str) and document["error"]["message"]
        assert_no_internals(body)


def assert_error(response: TestResponse, status: int, code: str) -> None:
    """A test client's error answer: all that assert_json_answer checks, with this status and code."""
    assert_json_answer(response.status_code, response.headers, response.get_data(), status, code)
