"""Requests as exact bytes on a loopback socket, and their answers: for what HTTP clients smooth over."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str]
    body: bytes
    send_error: str | None  # e.g. BrokenPipeError while the request was still being sent

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str | None:
        """The JSON error's code, or None when the answer is not one."""
        try:
            return self.json()["error"]["code"]  # type: ignore[no-any-return]
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def request_head(content_type: str, *extra: str) -> bytes:
    lines = ["POST /classify HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def with_header(request: bytes, name: str, value: str) -> bytes:
    """Insert a header right after the request line."""
    line_end = request.index(b"\r\n") + 2
    return request[:line_end] + f"{name}: {value}\r\n".encode() + request[line_end:]


def exchange(url: str, request: bytes, half_close: bool = False, timeout: float = 30) -> Answer:
    """Send `request`, optionally half-close, and read the answer until the server closes."""
    sock = socket.create_connection(address(url), timeout=timeout)
    send_error = None
    try:
        try:
            sock.sendall(request)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            send_error = type(error).__name__
        received = read_to_close(sock)
    finally:
        sock.close()
    return parse(received, send_error)


def read_to_close(sock: socket.socket, tolerate: type[OSError] | tuple[type[OSError], ...] = ConnectionResetError) -> bytes:
    """Everything the server sends until it closes (or until an error of the `tolerate` kind)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except tolerate:
        pass
    return received


def parse(received: bytes, send_error: str | None = None) -> Answer:
    if not received.startswith(b"HTTP/1."):
        return Answer(None, {}, received, send_error)
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split(" ", 2)[1]), headers, body, send_error)


def build(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if method != "GET" or body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


@contextmanager
def held_upload(url: str, length: int) -> Iterator[socket.socket]:
    """A POST /classify whose body (Content-Length `length`) has sent its first 2 bytes only: the
    worker that took it reads on, and takes no other request meanwhile."""
    with socket.create_connection(address(url), timeout=30) as upload:
        upload.sendall(request_head("image/jpeg", f"Content-Length: {length}") + b"\xff\xd8")
        yield upload
