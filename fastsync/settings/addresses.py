"""A server's address as a config file or a servers file writes it: ``host:port``.

Pure: used by `config.py` (the ``server`` keys), which reports the problem with the field's path.
"""

from __future__ import annotations

import ipaddress
import re

from fastsync.settings.configfile import quote


def parse_server(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) as the ``server`` key holds it, stripped; ValueError with
    the problem and an example of what is expected."""
    example = "expected host:port, e.g. imap.example.com:993"
    shown = quote(text)
    if "://" in text:
        rest = text.split("://", 1)[1].rstrip("/")
        raise ValueError(f"{shown} has a URL scheme; expected host:port without it, e.g. {rest}")
    if any(ch.isspace() or ch in "/@?#" for ch in text):
        raise ValueError(f"{shown} is not a host name; {example}")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{shown} has no closing ]; expected [address]:port, e.g. [::1]:993")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown} is not an IPv6 address in brackets; {example}") from None
        if not rest:
            raise ValueError(f"{shown} has no port; expected [address]:port, e.g. [{host}]:993")
        if not rest.startswith(":"):
            raise ValueError(f"{shown} has text after ]; expected [address]:port, e.g. [{host}]:993")
        port_text = rest[1:]
    elif text.count(":") > 1:
        # An unbracketed IPv6 address: the port would be ambiguous.
        host = text
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            host = text.rsplit(":", 1)[0]
        raise ValueError(f"{shown} is ambiguous; expected an IPv6 address in brackets, e.g. [{host}]:993")
    elif ":" in text:
        host, port_text = text.split(":", 1)
        if not host:
            raise ValueError(f"{shown} has no host; {example}")
    else:
        raise ValueError(f"{shown} has no port; expected host:port, e.g. {text}:993")
    if not re.fullmatch(r"[0-9]{1,5}", port_text):
        raise ValueError(
            f"{shown} has no valid port; expected a port number 1..65535, e.g. {host_for_example(host)}:993"
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range; expected a port number 1..65535")
    return host, port


def host_for_example(host: str) -> str:
    return f"[{host}]" if ":" in host else host
