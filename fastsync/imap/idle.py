"""A source connection that waits for the server to say something changed.

Protocol edge, beside `session.py`: `sync --watch` keeps one `Listener` per watched folder
(RFC 2177 IDLE on an EXAMINEd folder), or a single one for the whole account where the
server offers NOTIFY (RFC 5465: it then reports changes to every personal folder as
untagged STATUS, and new or renamed folders as LIST, while idling).  A listener only says
*which* folder changed; what changed is read by the ordinary planning of a sync pass.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from fastsync.settings.config import Account
from fastsync.imap import transport
from fastsync.imap.session import Session, Slots
from fastsync.imap.transport import Meter
from fastsync.imap.wire import text_of

# NOTIFY SET STATUS (RFC 5465 section 5.1): changes to any folder of the personal namespace
# come as STATUS responses, folders created, renamed or deleted as LIST responses.
NOTIFY_EVENTS = "(personal (MessageNew MessageExpunge FlagChange MailboxName))"

# Untagged responses that do not report a change: the server's keep-alive during IDLE
# ("* OK Still here") and the like.
_NOT_CHANGES = {b"OK", b"NO", b"BAD", b"BYE", b"CAPABILITY"}


def heard_by(notify: bool, folders: Sequence[str]) -> str:
    """How the listeners hear of changes, in the words of the watch's opening line."""
    return "NOTIFY (every folder)" if notify else f"IDLE on {', '.join(map(repr, folders)) or 'no folder'}"


class Listener:
    """One session in IDLE, with its connection slot; `wait` returns what changed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.folder = ""
        self._idling = False

    @classmethod
    def open(cls, account: Account, slots: Slots | None = None, meter_down: Meter | None = None) -> Listener:
        return cls(Session.open(account, slots=slots, meter_down=meter_down))

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        return self.session.guarded()

    def watch_folder(self, folder: str) -> None:
        """EXAMINE *folder* (read-only: nothing at the source changes) and IDLE on it; the
        folder stays selected while the listener lives (nothing else uses its session)."""
        self.session.examine(folder)
        self.folder = folder
        self._idle()

    def watch_account(self) -> None:
        """NOTIFY SET STATUS for the personal namespace, then IDLE (RFC 5465 section 3)."""
        with self._guard():
            refused = transport.notify_set(self.session.client, NOTIFY_EVENTS)
        if refused:
            raise self.session.folder_error(f"NOTIFY refused: {refused}")
        self._idle()

    def _idle(self) -> None:
        with self._guard():
            self.session.client.idle()
        self._idling = True

    def wait(self, timeout_s: float) -> list[str]:
        """Wait up to *timeout_s* for changes; the folders they concern (the watched folder
        for EXISTS, EXPUNGE, FETCH), or [] when nothing changed."""
        started = time.monotonic()
        with self._guard():
            responses = self.session.client.idle_check(timeout_s)
        if not responses and time.monotonic() - started < timeout_s / 2:
            # imapclient returns nothing, at once, when the server closed the connection
            # (it reads EOF as "no more responses"): ending and starting the IDLE again
            # asks the server, and a closed connection then says so as ConnectionLost.
            return self.renew()
        return self._changed(responses)

    def _changed(self, responses: list[tuple[object, ...]]) -> list[str]:
        changed = []
        for response in responses:
            if not response or response[0] in _NOT_CHANGES:
                continue
            if response[0] == b"STATUS" and len(response) > 1:
                changed.append(text_of(response[1]))
            elif response[0] == b"LIST" and len(response) > 3:
                changed.append(text_of(response[3]))
            else:
                changed.append(self.folder)
        return changed

    def renew(self) -> list[str]:
        """End IDLE and start it again: servers may drop an IDLE after 30 minutes of
        silence (RFC 2177 section 3), so it is re-issued before that.  What the server
        reported as the IDLE ended (Dovecot reports pending changes then) is returned."""
        responses: list[tuple[object, ...]] = []
        with self._guard():
            if self._idling:
                self._idling = False
                responses = self.session.client.idle_done()[1]
        self._idle()
        return self._changed(responses)

    def close(self) -> None:
        if self._idling and not self.session.closed:
            # Ending the IDLE of a connection that may be broken: the close drops it anyway.
            with contextlib.suppress(Exception):
                self.session.client.idle_done()
        self._idling = False
        self.session.close()
