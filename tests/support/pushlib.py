"""Helpers for the push-transport tests: a free loopback port and a POST to the operator's intake."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def post(url: str, token: str | None, body: Any, *, raw: bytes | None = None) -> int:
    """POST a report as rank 0 does (``Authorization: Bearer``); the HTTP status of the answer."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        data = raw if raw is not None else json.dumps(body).encode()
        async with session.post(url, data=data, headers=headers) as resp:
            return resp.status
