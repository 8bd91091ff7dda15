"""How many connections wait in a listening socket's queue for a worker to accept them."""

from __future__ import annotations

import socket
import struct
from typing import Any


def waiting(listener: Any) -> int:
    """Linux reports a listening TCP socket's accept-queue length in TCP_INFO's "unacked" field;
    0 where that cannot be read (another platform, a Unix socket)."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack_from("I", info, 24)[0]) if len(info) >= 28 else 0
