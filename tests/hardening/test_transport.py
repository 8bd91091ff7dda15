"""What reaches the app over real HTTP: body limits, deadlines, framing, and answers that arrive."""

from __future__ import annotations

import gzip
import socket
import time

import pytest

from body_guard import DRAIN_MIN_BYTES
from scripts.fault_scenarios import slow_client
from scripts.traffic import Payload
from tests import service
from tests.hardening.answers import assert_json_answer
from tests.hardening.conftest import API_KEY, TIMEOUTS
from tests.hardening.corpus import MAX_BYTES, chunked, short_body_request
from tests.hardening.wire import Answer, address, build, exchange, parse, read_to_close, request_head, with_header

pytestmark = pytest.mark.usefixtures("watch_workers")
DEADLINE = float(TIMEOUTS["UPLOAD_TIMEOUT"])


def keyed(request: bytes) -> bytes:
    return with_header(request, "X-API-Key", API_KEY)


def chunked_request(body: bytes, content_type: str = "image/jpeg") -> bytes:
    return keyed(request_head(content_type, "Transfer-Encoding: chunked") + chunked(body))


def test_a_chunked_photo_within_the_limit_is_classified(live: service.Service, jpeg: bytes) -> None:
    answer = exchange(live.url, chunked_request(jpeg))
    assert_json_answer(answer.status or 0, answer.headers, answer.body, 200, None)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_a_transfer_coding_other_than_chunked_is_a_501_that_names_it(live: service.Service, jpeg: bytes, coding: str) -> None:
    # gunicorn refuses br itself but hands gzip and deflate bodies over undecoded.
    request = keyed(request_head("image/jpeg", f"Transfer-Encoding: {coding}, chunked") + chunked(gzip.compress(jpeg)))
    with socket.create_connection(address(live.url), timeout=30) as sock:
        sock.sendall(request)
        received = read_to_close(sock)
    assert received.upper().startswith(b"HTTP/1.1 501 NOT IMPLEMENTED\r\n")  # werkzeug writes it in capitals
    answer = parse(received)
    assert (answer.status, answer.error_code) == (501, "not_implemented")
    assert coding in answer.json()["error"]["message"]


def test_a_chunked_body_of_exactly_the_limit_is_read_and_one_byte_more_is_a_413(live: service.Service) -> None:
    exactly = exchange(live.url, chunked_request(b"\xff" * MAX_BYTES))
    assert (exactly.status, exactly.json()["error"]["code"]) == (415, "invalid_image")  # read whole, then judged
    over = exchange(live.url, chunked_request(b"\xff" * (MAX_BYTES + 1)))
    assert (over.status, over.json()["error"]["code"]) == (413, "payload_too_large")


def test_a_client_sending_a_body_over_the_limit_can_finish_sending_and_reads_the_413(live: service.Service) -> None:
    # Refused from its Content-Length before reading; the rest is drained after the answer, so the
    # client's send does not fail (without the drain it meets a broken pipe, see RELIABILITY.md).
    body = b"\xff" * (16 * MAX_BYTES)  # more than loopback's socket buffers hold: without the drain, a reset
    answer = exchange(live.url, keyed(build("POST", "/classify", {"Content-Type": "image/jpeg"}, body)))
    assert answer.send_error is None
    assert (answer.status, answer.json()["error"]["code"]) == (413, "payload_too_large")


def test_a_body_far_over_the_limit_is_refused_unread_and_the_413_still_arrives(live: service.Service) -> None:
    body = b"\xff" * (DRAIN_MIN_BYTES + 8 * MAX_BYTES)  # beyond what is drained: the worker reads none of it
    answer = exchange(live.url, keyed(build("POST", "/classify", {"Content-Type": "image/jpeg"}, body)))
    assert (answer.status, answer.json()["error"]["code"]) == (413, "payload_too_large")


def test_an_unauthorized_upload_is_answered_401_after_the_client_finished_sending(live: service.Service, jpeg: bytes) -> None:
    answer = exchange(live.url, build("POST", "/classify", {"Content-Type": "image/jpeg"}, jpeg * 5))
    assert answer.send_error is None and answer.status == 401


def expect_continue(url: str, request: bytes, body: bytes) -> tuple[bytes, Answer, float]:
    """Send the head of `request` (whose body is `body`) with `Expect: 100-continue`, and the body
    only after a 100, as curl does for large uploads: (the server's first bytes, its answer, seconds)."""
    head = with_header(request[: len(request) - len(body)], "Expect", "100-continue")
    started = time.monotonic()
    with socket.create_connection(address(url), timeout=30) as sock:
        sock.sendall(head)
        received = sock.recv(65536)
        if received.startswith(b"HTTP/1.1 100"):
            sock.sendall(body)
        received += read_to_close(sock)
    answer = parse(received.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))
    return received, answer, time.monotonic() - started


def test_with_expect_100_continue_a_photo_is_sent_after_the_100_and_classified(live: service.Service, jpeg: bytes) -> None:
    first, answer, _ = expect_continue(live.url, keyed(build("POST", "/classify", {"Content-Type": "image/jpeg"}, jpeg)), jpeg)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert_json_answer(answer.status or 0, answer.headers, answer.body, 200, None)


@pytest.mark.parametrize(
    ("key", "headers", "status"),
    [
        (True, {"Content-Type": "image/jpeg"}, 413),  # refused from its Content-Length
        (False, {"Content-Type": "image/jpeg"}, 401),  # no key
        (True, {"Content-Type": "application/json"}, 415),
    ],
    ids=["over the limit", "no key", "wrong content type"],
)
def test_with_expect_100_continue_a_refusal_from_the_headers_comes_instead_of_the_100(
    live: service.Service, key: bool, headers: dict[str, str], status: int
) -> None:
    body = b"\xff" * (4 * MAX_BYTES)
    request = build("POST", "/classify", headers, body)
    first, answer, seconds = expect_continue(live.url, keyed(request) if key else request, body)
    assert not first.startswith(b"HTTP/1.1 100")  # the client is spared sending the body
    assert answer.status == status
    assert seconds < DEADLINE  # and the worker did not wait for a body that will not come


def test_with_expect_100_continue_a_client_that_sends_anyway_still_reads_the_413(live: service.Service) -> None:
    # Python's http.client, and curl or Go once they stop waiting, send the body without the 100.
    body = b"\xff" * (16 * MAX_BYTES)  # more than loopback's socket buffers hold: without the drain, a reset
    request = with_header(keyed(build("POST", "/classify", {"Content-Type": "image/jpeg"}, body)), "Expect", "100-continue")
    answer = exchange(live.url, request)
    assert answer.send_error is None
    assert (answer.status, answer.error_code) == (413, "payload_too_large")


def test_a_body_shorter_than_its_content_length_is_a_400(live: service.Service, jpeg: bytes) -> None:
    answer = exchange(live.url, keyed(short_body_request(jpeg[:5000])), half_close=True)
    assert_json_answer(answer.status or 0, answer.headers, answer.body, 400, "incomplete_body")


@pytest.mark.parametrize("mode", ["body", "headers", "silent"])
def test_a_slow_client_is_answered_408_at_its_deadline_and_the_other_worker_keeps_serving(
    live: service.Service, jpeg: bytes, mode: str
) -> None:
    interval = 0.3  # the slow client's pace; the normal request is sent one interval after it starts
    result = slow_client(live, Payload(jpeg), mode, interval=interval, limit=DEADLINE + 8, headers={"X-API-Key": API_KEY})
    assert result.status == 408
    assert result.code == ("upload_timeout" if mode == "body" else "header_timeout")
    # A silent connection waits in the kernel instead (TCP_DEFER_ACCEPT, gunicorn.conf.py): the deadline,
    # rounded up to SYN-ACK retransmissions, 1 + 2 s here; then it is answered at once.
    deadline = 3 if mode == "silent" else DEADLINE
    assert deadline - 0.2 <= result.seconds < deadline + 3  # 3 s: gunicorn's lingering close, at most 2 s
    # Served by the other worker, not queued behind: answered while the slow client still held its worker.
    assert interval + result.other_request_seconds < result.seconds
    assert result.other_request_status == 200  # a classification: a refused image would be a 4xx
    assert result.workers_after == result.workers_before


def photo_answered_behind(live: service.Service, jpeg: bytes, held: list[socket.socket], after: float = 0.3) -> tuple[Answer, float]:
    """A photo sent `after` seconds while the `held` connections are open (they are closed after):
    its answer, and the seconds it took."""
    try:
        time.sleep(after)
        started = time.monotonic()
        answer = exchange(live.url, keyed(build("POST", "/classify", {"Content-Type": "image/jpeg"}, jpeg)))
        return answer, time.monotonic() - started
    finally:
        for sock in held:
            sock.close()


# Browsers' preconnects, a balancer's spare connections, or an attacker: twice as many silent
# connections as workers, opened first. Each held a worker for HEADER_TIMEOUT plus gunicorn's 2 s
# lingering close, so the photo sent after them waited (2 + 2) x 2 s here. Browsers also keep
# preconnects open longer than the kernel's deferral (3 s for a 2 s deadline here): each then held
# a worker for HEADER_TIMEOUT more, and a photo sent just after waited behind them.
@pytest.mark.parametrize("after", [0.3, 3.5], ids=["while-the-kernel-holds-them", "once-the-kernel-hands-them-over"])
def test_connections_that_send_nothing_do_not_hold_up_a_request(live: service.Service, jpeg: bytes, after: float) -> None:
    silent = [socket.create_connection(address(live.url), timeout=30) for _ in range(4)]
    answer, waited = photo_answered_behind(live, jpeg, silent, after)
    assert answer.status == 200
    assert waited < DEADLINE, f"answered after {waited:.1f} s, behind the silent connections"


def test_a_worker_whose_client_missed_the_header_deadline_is_free_again_at_once(live: service.Service, jpeg: bytes) -> None:
    # Clients that sent part of a request line (so the kernel hands them over), then nothing, and never
    # close: each held its worker for the deadline plus gunicorn's 2 s of waiting for the close.
    stuck = [socket.create_connection(address(live.url), timeout=30) for _ in range(2)]
    for sock in stuck:
        sock.sendall(b"POST /classify HTTP/1.1\r\n")
    answer, waited = photo_answered_behind(live, jpeg, stuck)
    assert answer.status == 200
    assert waited < DEADLINE + 1, f"answered after {waited:.1f} s"
