"""`IP:PORT` address text shared by the agent's command line and the client."""

from __future__ import annotations

from nodes.errors import ConfigError


def parse_hostport(text: str, *, allow_zero_port: bool = False) -> tuple[str, int]:
    """`10.0.0.1:8080` or `[fd00::1]:8080` -> (host, port); ConfigError names the bad part."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"address {text!r}: expected IP:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"address {text!r}: port {port_text!r}, expected an integer") from None
    low = 0 if allow_zero_port else 1
    if not low <= port <= 65535:
        raise ConfigError(f"address {text!r}: port {port}, expected {low}..65535")
    return host, port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
