"""deploy/nginx.conf (and nginx-tls.conf) made runnable on loopback, for tests/test_nginx.py,
tests/test_nginx_tls.py and bench/."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def nginx_config(
    tmp: Path,
    web_root: Path,
    daemon_port: int,
    port: int,
    *,
    access_log: bool = True,
    site_file: str = "nginx.conf",
    rewrite: Mapping[str, str] | None = None,
) -> Path:
    """A whole nginx.conf in ``tmp`` wrapping deploy/``site_file`` with its root, daemon
    address and listen address (port 80) rewritten, and each of ``rewrite``'s lines (for
    deploy/nginx-tls.conf: its TLS port and certificate). Raises ValueError if the shipped
    file lost one of them."""
    site = (REPO / "deploy" / site_file).read_text()
    for old, new in (
        ("root /var/lib/pypi-mirror/web;", f"root {web_root};"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{daemon_port};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        *(rewrite or {}).items(),
    ):
        if old not in site:
            raise ValueError(f"deploy/{site_file} no longer contains {old!r}")
        site = site.replace(old, new)
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    # As root, workers would run as nobody and could not read pytest's 0700 temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    log = f"access_log {tmp}/access.log;" if access_log else "access_log off;"
    main = tmp / "nginx.conf"
    main.write_text(
        f"""
daemon off;
{user}
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    {log}
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{site}
}}
"""
    )
    return main
