"""Reading what a client sent, from a recording `bench.harness.tcpproxy.CountingProxy`: the
commands in its bytes (literal payloads skipped), the mailbox a command names, and whether each
command was announced by the server at that point (the checks behind the minimal-server tests).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from imapclient import imap_utf7

from bench.harness.tcpproxy import Recording

_LITERAL = re.compile(rb"(~?)\{(\d+)([+-]?)\}$")
_QUOTED = re.compile(rb'"(?:[^"\\]|\\.)*"')


@dataclass
class Command:
    """One command a client sent: its text with each literal's payload left out (the
    ``{N}`` marker stays) and each literal's form: ``{N}``, ``{N+}``, ``~{N}``..."""

    tag: str
    name: str
    text: bytes
    literals: list[bytes]

    @property
    def arguments(self) -> bytes:
        """The text after the command name, quoted strings emptied, upper case."""
        skip = 3 if self.name.startswith("UID ") else 2  # tag, name (UID and its command)
        words = self.text.split(b" ", skip)
        return _QUOTED.sub(b'""', words[skip]).upper() if len(words) > skip else b""


def logical_lines(stream: bytes) -> Iterator[tuple[bytes, list[bytes]]]:
    """Split an IMAP byte stream into logical lines: text with literal payloads skipped.

    A line that ends with a literal marker (``{N}``, ``{N+}``, ``{N-}``, ``~{N}``) goes on
    after the N bytes of the literal, whatever they contain (RFC 3501 section 4.3,
    RFC 7888, RFC 3516): a message body can hold lines that look like commands.
    """
    pos = 0
    while pos < len(stream):
        parts: list[bytes] = []
        literals: list[bytes] = []
        while True:
            end = stream.find(b"\r\n", pos)
            if end < 0:
                parts.append(stream[pos:])
                pos = len(stream)
                break
            line = stream[pos:end]
            pos = end + 2
            match = _LITERAL.search(line)
            if match is None:
                parts.append(line)
                break
            parts.append(line)
            literals.append(match.group(0))
            pos += int(match.group(2))
        yield b"".join(parts), literals


def commands(stream: bytes) -> list[Command]:
    """The commands in a client's bytes.  Lines of fewer than two words are not commands:
    a SASL response to AUTHENTICATE's continuation (base64), IDLE's DONE."""
    out = []
    for text, literals in logical_lines(stream):
        words = text.split(b" ")
        if len(words) < 2 or not words[1]:
            continue
        name = words[1].decode("ascii", "replace").upper()
        if name == "UID" and len(words) > 2:
            name = "UID " + words[2].decode("ascii", "replace").upper()
        out.append(Command(words[0].decode("ascii", "replace"), name, text, literals))
    return out


def mailbox_argument(command: Command) -> str | None:
    """The mailbox a SELECT, EXAMINE, APPEND, CREATE or STATUS names (its first argument),
    decoded from modified UTF-7; None when it was sent as a literal."""
    rest = command.text.split(b" ", 2)[2] if command.text.count(b" ") >= 2 else b""
    if rest.startswith(b'"'):
        match = _QUOTED.match(rest)
        if match is None:
            return None
        raw = re.sub(rb"\\(.)", rb"\1", match.group(0)[1:-1])
    elif _LITERAL.match(rest.split(b" ", 1)[0]):
        return None
    else:
        raw = rest.split(b" ", 1)[0]
    return str(imap_utf7.decode(raw))


# --------------------------------------------------------------------------- what a server announced

# RFC 3501 section 6: the commands every IMAP4rev1 server has.  Anything else needs an
# announcement (or is unknown, and then nobody announced it).
BASE_COMMANDS = frozenset({
    "CAPABILITY", "NOOP", "LOGOUT", "AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
    "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH",
    "STORE", "COPY", "UID FETCH", "UID STORE", "UID COPY", "UID SEARCH",
})
# Commands an extension adds, and the capability that announces it.
EXTENSION_COMMANDS = {
    "STARTTLS": "STARTTLS",
    "NAMESPACE": "NAMESPACE",
    "UNSELECT": "UNSELECT",
    "ENABLE": "ENABLE",
    "ID": "ID",
    "IDLE": "IDLE",
    "MOVE": "MOVE",
    "UID MOVE": "MOVE",
    "UID EXPUNGE": "UIDPLUS",
    "COMPRESS": "COMPRESS=DEFLATE",
    "GETQUOTA": "QUOTA",
    "GETQUOTAROOT": "QUOTA",
    "SETQUOTA": "QUOTA",
    "XLIST": "XLIST",
    "NOTIFY": "NOTIFY",
    "GETMETADATA": "METADATA",
    "SETMETADATA": "METADATA",
    "SORT": "SORT",
    "UID SORT": "SORT",
    "THREAD": "THREAD",
    "UID THREAD": "THREAD",
}
# RFC 3501 section 6.3.10.
BASE_STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"})
STATUS_ITEM_CAPABILITY = {"SIZE": "STATUS=SIZE", "HIGHESTMODSEQ": "CONDSTORE", "APPENDLIMIT": "APPENDLIMIT"}
# Words in FETCH, STORE, SEARCH or SELECT arguments that only an extension defines.
ARGUMENT_WORDS = {
    "CHANGEDSINCE": "CONDSTORE",
    "UNCHANGEDSINCE": "CONDSTORE",
    "MODSEQ": "CONDSTORE",
    "CONDSTORE": "CONDSTORE",
    "QRESYNC": "QRESYNC",
    "VANISHED": "QRESYNC",
    "BINARY": "BINARY",
    "BINARY.PEEK": "BINARY",
    "BINARY.SIZE": "BINARY",
    "PREVIEW": "PREVIEW",
    "EMAILID": "OBJECTID",
    "THREADID": "OBJECTID",
    "SAVEDATE": "SAVEDATE",
    "CATENATE": "CATENATE",
}

_CAPABILITY = re.compile(rb"(?:^\* CAPABILITY |\[CAPABILITY )([^\]]*)", re.IGNORECASE)


def announcements(stream: bytes, previous_tag: str | None) -> tuple[frozenset[str], frozenset[str] | None]:
    """What a server announced before login and after (None: nothing seen), from its bytes.

    *previous_tag* is the tag of the client's last command before the login command (None:
    the login came first).  Lists up to that command's tagged reply (or in the greeting)
    were announced before login; the first list after it came with the login (Dovecot
    sends an untagged CAPABILITY before the tagged OK, others a [CAPABILITY] code in the
    OK) or was asked for after it.
    """
    before: frozenset[str] = frozenset()
    after: frozenset[str] | None = None
    logging_in = False
    for index, (text, _literals) in enumerate(logical_lines(stream)):
        match = _CAPABILITY.search(text)
        if match is not None:
            listed = frozenset(match.group(1).decode("ascii", "replace").upper().split())
            if not logging_in:
                before = listed
            elif after is None:
                after = listed
        if previous_tag is None and index == 0 or previous_tag is not None and text.startswith(previous_tag.encode() + b" "):
            logging_in = True
    return before, after


def find_login(sent: Sequence[Command]) -> tuple[Command | None, str | None]:
    """The login command (AUTHENTICATE or LOGIN) and the tag of the command before it."""
    for index, command in enumerate(sent):
        if command.name in ("AUTHENTICATE", "LOGIN"):
            return command, sent[index - 1].tag if index else None
    return None, None


def needs(command: Command) -> set[str]:
    """The capabilities a command needs; "A|B" means either, "!X" means X must be absent."""
    name, args = command.name, command.arguments
    out: set[str] = set()
    if name in EXTENSION_COMMANDS:
        out.add(EXTENSION_COMMANDS[name])
    elif name not in BASE_COMMANDS:
        out.add(name)  # unknown here (X-GM-*, vendor commands): nobody announced it
    words = set(re.findall(rb"[A-Z0-9.=-]+", args))
    if name == "AUTHENTICATE":
        mechanism, *initial = args.split()
        out.add("AUTH=" + mechanism.decode())
        if initial:
            out.add("SASL-IR")  # RFC 4959
    elif name == "LOGIN":
        out.add("!LOGINDISABLED")  # RFC 3501 section 6.2.3
    elif name == "LIST":
        if b"(" in args or b"RETURN" in words:
            out.add("LIST-EXTENDED")  # RFC 5258: selection options, several patterns, RETURN
        if b"RETURN" in words and b"STATUS" in words:
            out.add("LIST-STATUS")  # RFC 5819
        if b"SPECIAL-USE" in words:
            out.add("SPECIAL-USE")  # RFC 6154
    elif name == "STATUS":
        items = args[args.rfind(b"(") + 1 :].strip(b") ").split()
        for item in items:
            text = item.decode()
            if text not in BASE_STATUS_ITEMS:
                out.add(STATUS_ITEM_CAPABILITY.get(text, text))
    elif name in ("SEARCH", "UID SEARCH"):
        if b"RETURN" in words:
            out.add("ESEARCH")  # RFC 4731
    elif name == "APPEND":
        if len(command.literals) > 1:
            out.add("MULTIAPPEND")  # RFC 3502
        if b"UTF8" in words:
            out.add("UTF8=ACCEPT")
    if name in ("FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH", "UID SEARCH", "SELECT", "EXAMINE", "APPEND"):
        out.update(ARGUMENT_WORDS[w.decode()] for w in words if w.decode() in ARGUMENT_WORDS)
        out.update("X-GM-EXT-1" for w in words if w.startswith(b"X-GM-"))
        if name in ("SELECT", "EXAMINE") and b"(" in args:
            out.add("SELECT parameters")  # RFC 4466: only extensions define them
    for marker in command.literals:
        size = int(re.sub(rb"\D", b"", marker))
        if marker.startswith(b"~"):
            out.add("BINARY")  # RFC 3516 literal8
        if marker.endswith(b"+}"):
            # RFC 7888: LITERAL+ allows any non-synchronizing literal, LITERAL- up to 4096 bytes.
            out.add("LITERAL+|LITERAL-" if size <= 4096 else "LITERAL+")
        elif marker.endswith(b"-}"):
            out.add("literal {N-} (no such syntax)")
    return out


def satisfied(need: str, announced: frozenset[str]) -> bool:
    if need.startswith("!"):
        return need[1:] not in announced
    return any(option in announced for option in need.split("|"))


def violations(recording: Recording, announced_after_login: frozenset[str] | None = None) -> list[str]:
    """Commands of one connection that need something the server did not announce.

    Up to the login command the list announced before login applies, after it the list
    the login's reply carried (or *announced_after_login*, to check against another set).
    """
    sent = commands(bytes(recording.client_bytes))
    login, previous_tag = find_login(sent)
    before, after = announcements(bytes(recording.server_bytes), previous_tag)
    if announced_after_login is not None:
        after = announced_after_login
    out = []
    logged_in = False
    for command in sent:
        announced = after if logged_in and after is not None else before
        for need in sorted(needs(command)):
            if not satisfied(need, announced):
                out.append(f"{command.text[:120]!r} needs {need}; announced: {' '.join(sorted(announced))}")
        logged_in = logged_in or command is login
    return out
