"""Ports and addresses of the team stack's servers."""

from __future__ import annotations

import socket

EVERY_INTERFACE = ("", "0.0.0.0", "::")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def advertised(host: str) -> str:
    """The address other machines reach a server by: this machine's name when it listens on every interface."""
    return socket.getfqdn() if host in EVERY_INTERFACE else host


def local(host: str) -> str:
    """The address this machine reaches a server by."""
    return "127.0.0.1" if host in EVERY_INTERFACE else host
