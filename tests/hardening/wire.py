"""Requests as exact bytes on a loopback socket, and their answers: for what HTTP clients smooth over."""

from __future__ import annotations

import json
import socket
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
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    finally:
        sock.close()
    return parse(received, send_error)


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
