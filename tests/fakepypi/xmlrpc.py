"""PyPI's XML-RPC changelog methods over the fake index's state (stdlib xmlrpc.client)."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from .model import IndexState

__all__ = ["DEFAULT_PAGE_SIZE", "handle_xmlrpc"]

#: PyPI answers at most this many rows per ``changelog_since_serial`` call.
DEFAULT_PAGE_SIZE = 50_000


def _call(state: IndexState, method: str, params: tuple[Any, ...], page_size: int) -> Any:
    if method == "changelog_last_serial" and not params:
        return state.serial
    if method == "changelog_since_serial" and len(params) == 1 and isinstance(params[0], int):
        since = params[0]
        rows = [row for row in state.changelog if row[4] > since]
        return [list(row) for row in rows[:page_size]]
    if method == "list_packages_with_serial" and not params:
        return {p.name: p.last_serial for p in state.projects.values()}
    if method == "list_packages" and not params:
        return sorted(p.name for p in state.projects.values())
    raise xmlrpc.client.Fault(-32601, f"method {method!r} with {len(params)} params not supported")


def handle_xmlrpc(state: IndexState, body: bytes, *, page_size: int = DEFAULT_PAGE_SIZE) -> bytes:
    """Answer one XML-RPC request body with a methodResponse (a value or a Fault)."""
    try:
        params, method = xmlrpc.client.loads(body)
    except Exception as exc:  # malformed request → fault, like a real server
        fault = xmlrpc.client.Fault(-32700, f"parse error: {exc}")
        return xmlrpc.client.dumps(fault, methodresponse=True).encode()
    try:
        result = _call(state, method or "", params, page_size)
    except xmlrpc.client.Fault as fault:
        return xmlrpc.client.dumps(fault, methodresponse=True).encode()
    return xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()
