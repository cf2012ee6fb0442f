"""A tiny OAuth2 token-introspection endpoint (RFC 7662) for Dovecot's ``oauth2`` passdb.

Dovecot POSTs ``token=<access token>`` to ``/introspect`` and reads the JSON reply: the
token is good when ``active`` is true and ``username`` is the login name.  Tests decide
which tokens are good with :meth:`TokenServer.grant` and :meth:`TokenServer.revoke`; an
unknown token gets ``{"active": false}``, which is what a real provider answers for an
expired or revoked one.  Standard library only; the server runs in a daemon thread.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class TokenServer:
    """``with TokenServer() as tokens: tokens.grant("tok", "alice"); tokens.url``."""

    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                token = (form.get("token") or [""])[0]
                self._answer(owner._lookup(token))

            def do_GET(self) -> None:  # introspection_mode = get
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                self._answer(owner._lookup((query.get("token") or [""])[0]))

            def _answer(self, reply: dict[str, object]) -> None:
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The introspection URL to give Dovecot."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/introspect"

    def grant(self, token: str, user: str) -> None:
        with self._lock:
            self._tokens[token] = user

    def revoke(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def _lookup(self, token: str) -> dict[str, object]:
        with self._lock:
            self.seen.append(token)
            user = self._tokens.get(token)
        return {"active": True, "username": user} if user else {"active": False}

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
