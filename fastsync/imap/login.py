"""An administrator's login to another user's mailbox, with SASL PLAIN (RFC 4616).

Protocol edge, used by `transport.connect`, which has secured the connection and read the
capabilities first, and which sends the exchange (its ``authenticate``: one AUTHENTICATE,
the tagged status and text back, BAD included).  `admin_login` opens the mailbox ``user`` as
the administrator ``auth_user`` (Dovecot master users, Cyrus admins, Zimbra and Stalwart
administrators): PLAIN's authorization identity is the only standard way to say whose
mailbox, so a server without AUTH=PLAIN is refused with one line that names the
alternative many servers offer, the plain login name ``user*admin``.
"""

from __future__ import annotations

from collections.abc import Callable

from fastsync.imap.capabilities import Capabilities
from fastsync.imap.replies import admin_refused, raise_if_throttled, redact, sasl_unusable
from fastsync.records.errors import AuthError
from fastsync.settings.config import Account


def admin_login(account: Account, offered: Capabilities, authenticate: Callable[[str, bytes], tuple[str, str]]) -> None:
    """Open the mailbox ``account.user`` as the administrator ``account.auth_user`` with
    ``account.password`` (his): PLAIN's message is authzid NUL authcid NUL passwd (RFC 4616
    section 2), as UTF-8.  No fallback: LOGIN has no authorization identity, and PLAIN
    without one would open the administrator's own mailbox.  Raises AuthError (or
    Throttled) naming the side, the administrator and the mailbox, never the password."""
    assert account.auth_user is not None
    if "PLAIN" in offered.auth_mechanisms:
        message = f"{account.user}\0{account.auth_user}\0{account.password}".encode()
        status, text = authenticate("PLAIN", message)
        if status == "OK":
            return
        text = redact(text, account.password)
        raise_if_throttled(text, account)
        if not sasl_unusable(status, text):
            raise admin_refused(account, text)
    side, shown = account.side, f"{account.user}*{account.auth_user}"
    raise AuthError(
        f"{account.where}: server does not accept AUTHENTICATE PLAIN, which {side}.auth_user needs to open "
        f"the mailbox {account.user!r} as the administrator {account.auth_user!r}; many servers take the "
        f"administrator in the login name instead: set {side}.user to {shown!r} (Dovecot's "
        f"auth_master_user_separator \"*\"; check the server's own) and remove {side}.auth_user",
        side=side,
    )
