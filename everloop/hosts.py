"""Which Host names everloop's web servers answer to: a guard against DNS rebinding (a
foreign page that resolves its own name to this machine, then reads the streams)."""
from __future__ import annotations

import contextlib
import ipaddress
import re
import socket

from .errors import EverloopError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def allowed_hosts(host: str, extra: list[str] | tuple = ()) -> set[str]:
    """Host-header names accepted: those `host` is reached by, plus --allow-host (guards
    against DNS rebinding: a foreign page that resolves its own name to this machine)."""
    names = {n.strip().lower().strip("[]").rstrip(".") for n in extra}
    for n in names:
        if not (HOSTNAME.match(n) or _is_ip(n)):
            raise EverloopError(f"--allow-host {n!r}: not a host name or IP address")
    h = host.strip("[]").lower()
    if h in LOOPBACK:
        return names | LOOPBACK
    if h in ("0.0.0.0", "::", ""):  # every interface: this machine's names and addresses
        mine = {socket.gethostname().lower(), socket.getfqdn().lower()}
        with contextlib.suppress(OSError):
            mine |= set(socket.gethostbyname_ex(socket.gethostname())[2])
        return names | LOOPBACK | mine
    return names | {h}


def _is_ip(text: str) -> bool:
    with contextlib.suppress(ValueError):
        return bool(ipaddress.ip_address(text))
    return False


def host_name(header: str) -> str:
    """The name in a Host header or an Origin's netloc: 'a.b:80' -> 'a.b', '[::1]:80' -> '::1'."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def host_refusal(request, hosts: set[str]):
    """A 403 for a request whose Host, or a WebSocket's Origin (a foreign page's socket
    carries it), is not one of `hosts`; None for one that may pass."""
    origin = request.headers.get("Origin")
    if host_name(request.headers.get("Host", "")) not in hosts or \
            (origin is not None and host_name(origin.split("://", 1)[-1]) not in hosts):
        from aiohttp import web
        return web.Response(status=403, text="everloop: this server does not answer to that Host "
                            "(start it with --allow-host NAME)\n")
    return None
