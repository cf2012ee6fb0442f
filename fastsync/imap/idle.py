"""A source connection that waits for the server to say something changed.

Protocol edge, beside `session.py`: `sync --watch` keeps one `Listener` per watched folder
(RFC 2177 IDLE on an EXAMINEd folder), or a single one for the whole account where the
server offers NOTIFY (RFC 5465: it then reports changes to every personal folder as
untagged STATUS, and new or renamed folders as LIST, while idling).  A listener only says
*which* folder changed; what changed is read by the ordinary planning of a sync pass.
"""

from __future__ import annotations

import contextlib
import imaplib

from fastsync.config import Account
from fastsync.imap import transport
from fastsync.imap.session import Slots, guard
from fastsync.imap.transport import Client, Meter, text_of

# NOTIFY SET STATUS (RFC 5465 section 5.1): changes to any folder of the personal namespace
# come as STATUS responses, folders created, renamed or deleted as LIST responses.
NOTIFY_EVENTS = "(personal (MessageNew MessageExpunge FlagChange MailboxName))"

# Untagged responses that do not report a change: the server's keep-alive during IDLE
# ("* OK Still here") and the like.
_NOT_CHANGES = {b"OK", b"NO", b"BAD", b"BYE", b"CAPABILITY"}


class Listener:
    """One connection in IDLE, with its connection slot; `wait` returns what changed."""

    def __init__(self, account: Account, client: Client, slots: Slots | None) -> None:
        self.account = account
        self.where = f"{account.label} ({account.server})"
        self.folder = ""
        self._client: Client | None = client
        self._slots = slots
        self._idling = False

    @classmethod
    def open(cls, account: Account, slots: Slots | None = None, meter_down: Meter | None = None) -> Listener:
        if slots is not None:
            slots.acquire()
        try:
            return cls(account, transport.connect(account, meter_down, None), slots)
        except BaseException:
            if slots is not None:
                slots.release()
            raise

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("listener closed")
        return self._client

    def capable(self, name: str) -> bool:
        return any(text_of(c).upper() == name for c in self.client.capabilities())

    def watch_folder(self, folder: str) -> None:
        """EXAMINE *folder* (read-only: nothing at the source changes) and IDLE on it."""
        with guard(self.account, self.where):
            self.client.select_folder(folder, readonly=True)
            self.folder = folder
            self._idle()

    def watch_account(self) -> None:
        """NOTIFY SET STATUS for the personal namespace, then IDLE (RFC 5465 section 3)."""
        imap = self.client._imap
        # imaplib checks each command against its table of known ones; NOTIFY is not there.
        imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))
        with guard(self.account, self.where):
            typ, data = imap._simple_command("NOTIFY", "SET", "STATUS", NOTIFY_EVENTS)
            # The STATUS of every folder that NOTIFY SET STATUS sends first says nothing new.
            imap.untagged_responses.clear()
            if typ != "OK":
                raise imaplib.IMAP4.error(f"NOTIFY refused: {text_of(data)}")
            self._idle()

    def _idle(self) -> None:
        self.client.idle()
        self._idling = True

    def wait(self, timeout_s: float) -> list[str]:
        """Wait up to *timeout_s* for changes; the folders they concern ('' for the watched
        folder itself), or [] when nothing changed."""
        with guard(self.account, self.where):
            responses = self.client.idle_check(timeout_s)
        changed = []
        for response in responses:
            if not response or response[0] in _NOT_CHANGES:
                continue
            if response[0] == b"STATUS" and len(response) > 1:
                changed.append(text_of(response[1]))
            elif response[0] == b"LIST" and len(response) > 3:
                changed.append(text_of(response[3]))
            else:
                # EXISTS, EXPUNGE, FETCH (flags), VANISHED: the folder in IDLE.
                changed.append(self.folder)
        return changed

    def renew(self) -> None:
        """End IDLE and start it again: servers may drop an IDLE after 30 minutes of
        silence (RFC 2177 section 3), so it is re-issued before that."""
        with guard(self.account, self.where):
            if self._idling:
                self.client.idle_done()
            self._idle()

    def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            # Closing a connection that may be broken: whatever fails, it is dropped.
            with contextlib.suppress(Exception):
                if self._idling:
                    client.idle_done()
                client.logout()
            transport.close_quietly(client)
        finally:
            if self._slots is not None:
                self._slots.release()
