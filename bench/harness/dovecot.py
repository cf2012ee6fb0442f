"""Start a private, throwaway Dovecot IMAP server for fastsync's tests and benchmarks.

Everything the instance needs (configuration, passwd-file, mail store, run directory,
log, TLS certificates) lives under one directory given by the caller; the system
configuration in /etc/dovecot is never read because the master is started with
``-c <our config>``.  Only the standard library is used (plus imapclient for the
readiness check and the :meth:`Dovecot.client` helper); certificates are made with
the ``openssl`` command line tool.

Example::

    with Dovecot(tmp / "dc", {"alice": "secret"}) as server:
        client = server.client("alice")
        client.create_folder("Archive/2020")
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

import imapclient
import psutil

__all__ = ["GMAIL_ALL", "GMAIL_ARCHIVE", "GMAIL_IMPORTANT", "GMAIL_STARRED", "MAIL_FORMAT", "Dovecot", "DovecotError"]

# Mail storage format.  Appending 5,000 messages of ~1.8 KB to INBOX with MULTIAPPEND
# (10 batches of 500) over the plain port, mail_fsync=never, measured on the dev VM
# (2 vCPU, virtio disk, ext4; several alternating runs, the disk's writeback makes
# single runs noisy):
#   maildir (LAYOUT=fs): 0.33-0.43 s, 2.7-3.9 s when the disk is flushing
#   sdbox:               0.35-0.53 s, 2.8-3.9 s when the disk is flushing
#   mdbox:               0.13-0.21 s, never slower
#   (on tmpfs: maildir 0.25-0.38 s, sdbox 0.23-0.27 s)
# maildir and sdbox create one file per message; mdbox appends to a few multi-message
# storage files (mdbox_rotate_size), so it does far less metadata I/O and is the default.
# All three use the "fs" hierarchy layout here, so "." is allowed in names with "/".
MAIL_FORMAT = "mdbox"

# The longest unix socket Dovecot puts under base_dir is about "token-login/imap-urlauth";
# sun_path holds 108 bytes on Linux, so base_dir must stay well below that.
_MAX_BASE_DIR = 80

# "Sent Items" and "Deleted Items" are Exchange's names for the same roles: an account
# that has them (and not "Sent"/"Trash") tests pairing folders by role, not by name.
_SPECIAL_USE = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Sent Items": "\\Sent",
    "Deleted Items": "\\Trash",
}


# A Gmail-like account (``gmail_like=True``), for sources and destinations that behave as
# Gmail does without Gmail: "[Gmail]/All Mail" (\All) shows every message of the account,
# including "archived" ones that are in no listed folder, and "[Gmail]/Starred" (\Flagged)
# and "[Gmail]/Important" (\Important) show subsets.  They are Dovecot virtual mailboxes
# (the virtual plugin, doc.dovecot.org "Virtual Plugin") in a namespace with the prefix
# "[Gmail]/"; archived messages live in GMAIL_ARCHIVE, in a namespace that LIST and
# NAMESPACE do not show (list = no, hidden = yes) but that SELECT, APPEND and CREATE still
# reach by its full name.  Names use "/" here; with separator "." they use "." instead.
GMAIL_ALL = "[Gmail]/All Mail"
GMAIL_STARRED = "[Gmail]/Starred"
GMAIL_IMPORTANT = "[Gmail]/Important"
GMAIL_ARCHIVE = "Archive-hidden/Archived"
# The keyword that puts a message in "[Gmail]/Important" (Gmail has no such keyword over
# IMAP; a test sets it to give the folder members).
GMAIL_IMPORTANT_KEYWORD = "$Important"

# Each virtual mailbox of a Gmail-like account: its special-use, and its dovecot-virtual
# file (mailbox patterns, then an indented SEARCH program).  "*" matches only the
# namespace with the empty prefix, so the hidden archive is named on its own line; "!"
# makes the archive the place where an APPEND to All Mail lands, as an APPEND to Gmail's
# All Mail makes an archived message (a message without labels).
_GMAIL_VIRTUAL = {
    "All Mail": ("\\All", "!{archive}\n*\n  all\n"),
    "Starred": ("\\Flagged", "*\n{archive_ns}*\n  flagged\n"),
    "Important": ("\\Important", f"*\n{{archive_ns}}*\n  keyword {GMAIL_IMPORTANT_KEYWORD}\n"),
}


class DovecotError(RuntimeError):
    """The private Dovecot instance could not be configured, started or queried."""


def _free_port() -> int:
    """Ask the kernel for an unused TCP port on 127.0.0.1 (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise DovecotError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result  # type: ignore[no-any-return]


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """Create a test CA and a server certificate it signs; return (ca_file, cert, key).

    The server certificate names ``IP:127.0.0.1`` and ``DNS:localhost`` in subjectAltName
    (RFC 6125 verifiers ignore the CN) and carries the key identifiers and key usages that
    Python's ``VERIFY_X509_STRICT`` (default since 3.13) insists on.
    """
    if shutil.which("openssl") is None:
        raise DovecotError("the openssl command line tool is required to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_file),
          "-days", "3650", "-subj", "/CN=fastsync test CA",
          "-addext", "basicConstraints=critical,CA:TRUE",
          "-addext", "keyUsage=critical,keyCertSign,cRLSign",
          "-addext", "subjectKeyIdentifier=hash"])
    _run(["openssl", "req", "-new", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"])
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_file), "-CAkey", str(ca_key),
          "-CAcreateserial", "-out", str(cert), "-days", "3650", "-extfile", str(ext)])
    return ca_file, cert, key


class Dovecot:
    """A private Dovecot 2.3 instance listening on 127.0.0.1 with free ports.

    ``port`` is plain IMAP (offering STARTTLS unless ``starttls=False``), ``tls_port``
    is implicit TLS (RFC 8314; ``None`` when ``starttls=False``).  ``users`` maps user
    names to plain-text passwords; more can be added while running with :meth:`add_user`.

    With ``oauth2_introspection_url``, the server also offers the SASL mechanisms XOAUTH2
    and OAUTHBEARER (RFC 7628): Dovecot's ``oauth2`` passdb POSTs each bearer token to
    that URL (RFC 7662 token introspection) and accepts it when the JSON reply has
    ``"active": true`` and ``"username"`` equal to the login name.  Password logins keep
    working for every user: the passwd-file passdb stays first and serves only the
    password mechanisms.

    ``master_users`` (name -> password) are administrators who may log in as any user
    (Dovecot's master users, doc.dovecot.org "Master users/passwords"): with SASL PLAIN,
    authorization identity = the user and authentication identity = the master user, or
    with ``user*master`` as a plain login name (``auth_master_user_separator = *``).
    They sit in a passdb of their own (``master = yes``) with ``result_success =
    continue``, so the user logged into must exist in the ordinary passdb; they cannot
    log in as themselves.

    ``namespace_prefix="INBOX."`` (with ``separator="."``) puts every personal folder
    under INBOX, as Courier and Cyrus do (RFC 2342): "Sent" is then "INBOX.Sent", and
    the special-use declarations below apply to the names under the prefix.
    ``validate_fs_names=False`` lets the server hold names that Dovecot's default
    refuses (a component starting with "~"), to give another server one to refuse.

    ``fsync=True`` writes ``mail_fsync = optimized`` (Dovecot's default) instead of
    ``never``: slower, but as production servers store mail.

    ``chroot=False`` (only meaningful as root): mail processes see the real file system,
    as doveadm's imapc over TLS needs; the parents of ``root`` must be enterable by others.

    ``gmail_like=True`` gives every user Gmail's view of an account (see `GMAIL_ALL`):
    "[Gmail]/All Mail" (\\All), "[Gmail]/Starred" (\\Flagged) and "[Gmail]/Important"
    (\\Important) are virtual folders, and `GMAIL_ARCHIVE` (not listed) holds the
    archived messages that only All Mail shows.  A message with two labels is the same
    bytes appended to two folders.  Unlike Gmail, All Mail then shows it twice, and
    its UIDs are the virtual mailbox's own.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        root: Path,
        users: dict[str, str],
        separator: str = "/",
        starttls: bool = True,
        max_userip_connections: int = 200,
        *,
        mail_format: str = MAIL_FORMAT,
        imap_capability: str | None = None,
        oauth2_introspection_url: str | None = None,
        master_users: dict[str, str] | None = None,
        quota_storage: str | None = None,
        quota_max_mail_size: str | None = None,
        max_keyword_length: int | None = None,
        namespace_prefix: str = "",
        validate_fs_names: bool = True,
        gmail_like: bool = False,
        fsync: bool = False,
        chroot: bool = True,
        imap_zlib: bool = False,
    ) -> None:
        if separator not in ("/", "."):
            raise ValueError(f"separator must be '/' or '.', not {separator!r}")
        # RFC 2342 personal namespace prefix, the Courier/Cyrus style "INBOX." with "." as
        # separator: every folder but INBOX is then named "INBOX.<name>".  Other prefixes
        # are not needed by the tests, so they are refused rather than half supported.
        if namespace_prefix not in ("", "INBOX."):
            raise ValueError(f"namespace_prefix must be '' or 'INBOX.', not {namespace_prefix!r}")
        if namespace_prefix and separator != ".":
            raise ValueError(f"namespace_prefix {namespace_prefix!r} needs separator '.', not {separator!r}")
        if gmail_like and namespace_prefix:
            raise ValueError("gmail_like needs namespace_prefix '' (Gmail has no personal prefix)")
        if mail_format not in ("sdbox", "mdbox", "maildir"):
            raise ValueError(f"mail_format must be 'sdbox', 'mdbox' or 'maildir', not {mail_format!r}")
        for name in users:
            self._check_user(name)
        self.root = Path(root).absolute()
        self.users = dict(users)
        self.separator = separator
        self.starttls = starttls
        self.max_userip_connections = max_userip_connections
        self.mail_format = mail_format
        self.imap_capability = imap_capability
        self.oauth2_introspection_url = oauth2_introspection_url
        self.master_users = dict(master_users or {})
        for name in self.master_users:
            self._check_user(name)
        # Dovecot's quota plugin, for tests of refused APPENDs: a storage limit per user
        # (e.g. "500K": APPEND fails with [OVERQUOTA]) and a largest message (e.g. "100k").
        self.quota_storage = quota_storage
        self.quota_max_mail_size = quota_max_mail_size
        # mail_max_keyword_length: longer keywords make APPEND and STORE fail, as servers
        # that refuse some keywords (too long, characters they do not take) answer.
        self.max_keyword_length = max_keyword_length
        self.namespace_prefix = namespace_prefix
        # Dovecot refuses folder names that are awkward as file names (starting with "~",
        # a "." or ".." component); with False (mail_location's NO-FS-VALIDATION) it
        # accepts them, so a source can hold a folder that a default destination refuses.
        self.validate_fs_names = validate_fs_names
        self.gmail_like = gmail_like
        # mail_fsync: "never" by default (tests throw the data away, and fsync makes every
        # APPEND wait for the disk); True gives "optimized", Dovecot's own default and what
        # production servers run, for benchmarks that should pay what a real server pays.
        self.fsync = fsync
        # As root, mail processes are chrooted into the mail store by default, so that
        # `root` may sit under directories only root can enter.  A doveadm run against
        # this server (bench/run.py) is chrooted too, and then cannot load Dovecot's TLS
        # module (/usr/lib/dovecot/modules) for an imapc source over TLS: chroot=False
        # serves homes by their real path instead, and needs every parent of the mail
        # store to be enterable by the mail user (checked by start()).
        self.chroot = chroot
        # COMPRESS=DEFLATE (RFC 4978), announced after login: Dovecot's imap_zlib plugin
        # (lib30_imap_zlib_plugin.so).  The zlib plugin (compressed mail storage) is not needed.
        self.imap_zlib = imap_zlib
        self.port = 0
        self.tls_port: int | None = None
        self.ca_file: Path | None = None
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.passwd_path = self.root / "users"
        self.oauth2_path = self.root / "dovecot-oauth2.conf.ext"
        self.master_path = self.root / "master-users"
        self.mail_root = self.root / "mail"
        self.base_dir = self.root / "run"
        self._short_base_dir: str | None = None
        self._master: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        """Write the configuration, start the master in the foreground and wait for a LOGIN to work."""
        if self.running:
            return
        if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
            raise DovecotError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        (self.root / "state").mkdir(exist_ok=True)
        if len(str(self.base_dir)) > _MAX_BASE_DIR:
            # Keep socket paths short; this directory is removed again by stop().
            self._short_base_dir = tempfile.mkdtemp(prefix="dovecot-")
            self.base_dir = Path(self._short_base_dir)
        self.base_dir.mkdir(exist_ok=True)
        if self.starttls and self.ca_file is None:
            self.ca_file, self._cert, self._key = make_certificates(self.root / "tls")
        self._write_passwd()
        self._write_oauth2()
        self._chown_mail_root()
        if os.geteuid() == 0 and not self.chroot:
            self._check_reachable()

        last_error = ""
        for attempt in range(3):  # a free port may be taken between probing and binding
            # A restart keeps its ports, as a real server does: clients reconnect to them.
            if not (attempt == 0 and self.port):
                self.port = _free_port()
                self.tls_port = _free_port() if self.starttls else None
            self.config_path.write_text(self._config())
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._master = subprocess.Popen(
                [self._dovecot_binary(), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=open(self.root / "master.stderr", "ab"),  # noqa: SIM115 - owned by the child
                # Own process group: stop() can then reap stragglers without touching anything else.
                start_new_session=True,
            )
            try:
                self._wait_ready(timeout)
                return
            except DovecotError as error:
                last_error = str(error)
                self._terminate()
                log = self.log_path.read_text(errors="replace")[log_offset:] if self.log_path.exists() else ""
                if "Address already in use" not in log:
                    break
        raise DovecotError(last_error)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the master and wait until every process of this instance is gone.

        SIGTERM to the master is what ``doveadm stop`` sends too, but doveadm then polls
        for up to 3 s; the master itself needs ~1 s.  Sessions whose client is still
        connected would linger another 10 s ("Server shutting down"), so whatever is
        left of our process group afterwards gets SIGTERM (then SIGKILL) directly.
        """
        if self._master is None:
            return
        self._master.terminate()
        self._terminate(timeout)
        if self._short_base_dir is not None:
            shutil.rmtree(self._short_base_dir, ignore_errors=True)
            self._short_base_dir = None
            self.base_dir = self.root / "run"

    def _terminate(self, timeout: float = 10.0) -> None:
        master = self._master
        if master is None:
            return
        pgid = master.pid  # start_new_session=True made the master a group leader
        try:
            master.wait(timeout)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        # Only this instance's processes are in the group: end them, then escalate.  The
        # log process lingers ~1.5 s after SIGTERM to drain its pipes; the data is
        # throwaway, so after a short grace period SIGKILL it.
        deadline = time.monotonic() + 0.5
        sig = signal.SIGTERM
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    break  # only unreaped zombies can be left; nothing more to do
                sig = signal.SIGKILL
                deadline = time.monotonic() + 2
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self._master = None

    # ------------------------------------------------------------------ users and clients

    def cpu_s(self) -> float:
        """CPU seconds the server has spent so far: its master, the processes it has reaped
        (imap, imap-login, auth: Dovecot waits for each) and those still running.  A tool's
        share is the difference over its run, taken once its sessions have logged out."""
        if self._master is None:
            return 0.0
        try:
            master = psutil.Process(self._master.pid)
            times = master.cpu_times()
            total = float(times.user + times.system + times.children_user + times.children_system)
            for child in master.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
        except psutil.Error:
            return 0.0
        return total

    def add_user(self, user: str, password: str) -> None:
        """Add (or change) one user while running; see :meth:`add_users`."""
        self.add_users({user: password})

    def add_users(self, users: dict[str, str]) -> None:
        """Add (or change) users while running, without restarting Dovecot.

        The passwd-file passdb re-reads its file when the mtime or size changed, but it
        stat()s the file at most once per second (db-passwd-file.c compares with
        ``ioloop_time``).  So after rewriting the file we wait until the wall clock has
        entered the next second: the next lookup is then guaranteed to see the new file.
        Add users in batches to pay that wait once.
        """
        for name in users:
            self._check_user(name)
        self.users.update(users)
        if self.passwd_path.exists():
            self._write_passwd()
            if self.running:
                written = int(time.time())
                while int(time.time()) <= written:
                    time.sleep(0.02)

    def client(
        self, user: str, tls: bool | Literal["implicit", "starttls", "none"] = False, timeout: float = 30.0
    ) -> imapclient.IMAPClient:
        """Return an IMAPClient logged in as ``user`` (tls: False/"none", True/"implicit", "starttls")."""
        mode = {False: "none", True: "implicit"}.get(tls, tls)  # type: ignore[call-overload]
        if mode == "none":
            client = imapclient.IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        elif mode == "implicit":
            if self.tls_port is None:
                raise DovecotError("this instance was started with starttls=False: no TLS port")
            client = imapclient.IMAPClient(
                self.host, self.tls_port, ssl=True, ssl_context=self.ssl_context(), timeout=timeout
            )
        elif mode == "starttls":
            client = imapclient.IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
            client.starttls(self.ssl_context())
        else:
            raise ValueError(f"unknown tls mode {tls!r}")
        client.login(user, self.users[user])
        return client

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this instance's CA."""
        if self.ca_file is None:
            raise DovecotError("this instance has no TLS (starttls=False)")
        return ssl.create_default_context(cafile=str(self.ca_file))

    def connections(self, user: str) -> int:
        """Open IMAP sessions of ``user`` as the server counts them (anvil, via ``doveadm who -1``).

        This is the same counter that enforces ``mail_max_userip_connections``.  Only
        logged-in sessions count; a connection still in the pre-auth state does not.
        """
        result = _run(["doveadm", "-c", str(self.config_path), "who", "-1", user])
        # "doveadm who -1" prints a header line, then one line per session:
        # username  proto  pid  ip
        lines = [line.split() for line in result.stdout.splitlines()[1:] if line.strip()]
        return sum(1 for fields in lines if fields and fields[0] == user)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _check_user(name: str) -> None:
        # passwd-file is colon separated; %u also becomes a directory name.
        if not name or any(c in name for c in ":/\n\r\t ") or name.startswith("."):
            raise ValueError(f"unsupported user name {name!r}")

    @staticmethod
    def _dovecot_binary() -> str:
        return shutil.which("dovecot") or "/usr/sbin/dovecot"

    def _identities(self) -> tuple[str, str, int, int]:
        """(internal user, login user, mail uid, mail gid) that work for the current euid.

        Dovecot refuses to let mail processes run as root ("userdb returned 0 as uid"), so
        when we are root the mail store belongs to the unprivileged ``nobody`` and the
        mail process is chrooted into it (see :meth:`_config`).  As an ordinary user
        (rootless install, doc.dovecot.org "Rootless installation") everything runs as us.
        """
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid()).pw_name
            return me, me, os.geteuid(), os.getegid()
        try:
            internal = pwd.getpwnam("dovecot").pw_name
            login = pwd.getpwnam("dovenull").pw_name
        except KeyError:  # Debian's package creates both; fall back to nobody elsewhere
            internal = login = "nobody"
        nobody = pwd.getpwnam("nobody")
        try:
            gid = grp.getgrnam("nogroup").gr_gid
        except KeyError:
            gid = nobody.pw_gid
        return internal, login, nobody.pw_uid, gid

    def _chown_mail_root(self) -> None:
        _internal, _login, uid, gid = self._identities()
        if os.geteuid() == 0:
            os.chown(self.mail_root, uid, gid)

    def _check_reachable(self) -> None:
        """Without a chroot the unprivileged mail user must be able to enter every parent of the store."""
        for parent in self.mail_root.parents:
            if not parent.stat().st_mode & 0o001:
                raise DovecotError(
                    f"{parent} cannot be entered by others, so Dovecot's mail processes cannot reach "
                    f"{self.mail_root}; chmod o+x it or use chroot=True"
                )

    def _write_passwd(self) -> None:
        # Homes are made up front: the mail process chdir()s to its home before it
        # creates anything, and logs an error when the home is missing.
        _internal, _login, uid, gid = self._identities()
        for user in self.users:
            home = self.mail_root / user
            if not home.exists():
                home.mkdir()
                if os.geteuid() == 0:
                    os.chown(home, uid, gid)
                if self.gmail_like:
                    self._write_gmail_virtual(home, uid, gid)
        # Written to a temporary file then renamed: the auth process re-reads passwd-file
        # when it changes, and must never see a half-written file.
        text = "".join(f"{user}:{{PLAIN}}{password}\n" for user, password in self.users.items())
        tmp = self.passwd_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.passwd_path)
        if self.master_users:
            masters = "".join(f"{user}:{{PLAIN}}{password}\n" for user, password in self.master_users.items())
            self.master_path.write_text(masters)
            os.chmod(self.master_path, 0o600)

    def _write_gmail_virtual(self, home: Path, uid: int, gid: int) -> None:
        """One directory per virtual folder under ~/virtual, each with its dovecot-virtual
        file; Dovecot keeps the virtual mailbox's index there too, so the mail user owns it."""
        sep = self.separator
        archive = GMAIL_ARCHIVE.replace("/", sep)
        archive_ns = archive.split(sep)[0] + sep
        made = [home / "virtual"]
        for name, (_flag, text) in _GMAIL_VIRTUAL.items():
            folder = home / "virtual" / name
            folder.mkdir(parents=True)
            (folder / "dovecot-virtual").write_text(text.format(archive=archive, archive_ns=archive_ns))
            made += [folder, folder / "dovecot-virtual"]
        if os.geteuid() == 0:
            for path in made:
                os.chown(path, uid, gid)

    def _gmail_config(self) -> str:
        """The virtual plugin and the two extra namespaces of a Gmail-like account."""
        if not self.gmail_like:
            return ""
        sep = self.separator
        gmail_prefix = GMAIL_ALL.split("/")[0] + sep
        archive_prefix, archive_folder = GMAIL_ARCHIVE.split("/")
        store = self.mail_format if self.mail_format in ("sdbox", "mdbox") else "maildir"
        archive_location = f"{store}:~/archive" + (":LAYOUT=fs" if store == "maildir" else "")
        mailboxes = "".join(
            f"  mailbox \"{name}\" {{\n    special_use = {flag}\n  }}\n" for name, (flag, _text) in _GMAIL_VIRTUAL.items()
        )
        # hidden = yes keeps both out of NAMESPACE, as Gmail announces only its personal
        # namespace; the [Gmail] folders are still listed (list = yes), the archive not.
        return f"""\
mail_plugins = $mail_plugins virtual
namespace gmail {{
  prefix = {gmail_prefix}
  separator = {sep}
  location = virtual:~/virtual
  hidden = yes
  list = yes
  subscriptions = no
{mailboxes}}}
namespace archive {{
  prefix = {archive_prefix}{sep}
  separator = {sep}
  location = {archive_location}
  hidden = yes
  list = no
  subscriptions = no
  mailbox "{archive_folder}" {{
    auto = create
  }}
}}
"""

    def _zlib_config(self) -> str:
        if not self.imap_zlib:
            return ""
        return "protocol imap {\n  mail_plugins = $mail_plugins imap_zlib\n}\n"

    def _quota_config(self) -> str:
        if self.quota_storage is None and self.quota_max_mail_size is None:
            return ""
        # The "count" backend keeps its own counters; it requires quota_vsizes.
        lines = ["  quota = count:User quota", "  quota_vsizes = yes"]
        if self.quota_storage is not None:
            lines.append(f"  quota_rule = *:storage={self.quota_storage}")
        if self.quota_max_mail_size is not None:
            lines.append(f"  quota_max_mail_size = {self.quota_max_mail_size}")
        # imap_quota: GETQUOTAROOT and GETQUOTA (RFC 9208), as providers answer them.
        return ("mail_plugins = $mail_plugins quota\nprotocol imap {\n  mail_plugins = $mail_plugins imap_quota\n}\n"
                "plugin {\n" + "\n".join(lines) + "\n}\n")

    def _write_oauth2(self) -> None:
        if self.oauth2_introspection_url is None:
            return
        # Keys of Dovecot 2.3's oauth2 passdb (doc.dovecot.org "OAuth2"): "post" sends
        # token=<token> as a form body; the reply must name the user in username_attribute
        # and be active, else the login is refused.
        self.oauth2_path.write_text(
            f"introspection_mode = post\n"
            f"introspection_url = {self.oauth2_introspection_url}\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
        )

    def _master_config(self, mechanisms: str) -> str:
        """The master users' passdb, first (Dovecot asks passdbs in order), or ''.

        ``result_success = continue`` has the next passdb look the login user up, so that a
        master user cannot log in as a user who does not exist (doc.dovecot.org "Master
        users/passwords"); ``*`` separates user and master in a plain login name.
        """
        if not self.master_users:
            return ""
        return (
            "auth_master_user_separator = *\n"
            "passdb {\n"
            f"  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {self.master_path}\n"
            f"  master = yes\n  result_success = continue\n{mechanisms}"
            "}\n"
        )

    def _auth_config(self) -> str:
        """auth_mechanisms and passdbs: master users when given, passwd-file, plus oauth2
        when an introspection URL is set."""
        passwd = f"  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {self.passwd_path}\n"
        if self.oauth2_introspection_url is None:
            return f"auth_mechanisms = plain login\n{self._master_config('')}passdb {{\n{passwd}}}\n"
        # Each passdb serves only its own mechanisms, so a bearer token is never compared
        # with a password (and a password never sent to the introspection endpoint).
        return (
            "auth_mechanisms = plain login xoauth2 oauthbearer\n"
            f"{self._master_config('  mechanisms = plain login' + chr(10))}"
            f"passdb {{\n{passwd}  mechanisms = plain login\n}}\n"
            "passdb {\n"
            "  driver = oauth2\n"
            "  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {self.oauth2_path}\n"
            "}\n"
        )

    def _config(self) -> str:
        internal, login, uid, gid = self._identities()
        root_mode = os.geteuid() == 0
        if root_mode and self.chroot:
            # "/./" splits the chroot from the home inside it (userdb "home" doc, mail_chroot):
            # the chroot happens while still root, so the parents of `root` may be 0700
            # (pytest's /tmp/pytest-of-root is) and the mail process still reaches its home.
            home = f"{self.mail_root}/./%u"
            chroot = f"valid_chroot_dirs = {self.mail_root}\n"
        else:
            home = f"{self.mail_root}/%u"
            chroot = ""
        if self.mail_format in ("sdbox", "mdbox"):
            mail_location = f"{self.mail_format}:~/mail"
            # Bigger m.* storage files: fewer files to create while seeding.
            format_tuning = "mdbox_rotate_size = 64M\n" if self.mail_format == "mdbox" else ""
        else:
            # LAYOUT=fs: real directories per folder, so "." is allowed in names with "/".
            mail_location = "maildir:~/Maildir:LAYOUT=fs"
            format_tuning = "maildir_very_dirty_syncs = yes\n"  # we are the only writer
        mailboxes = "".join(
            f"  mailbox \"{name}\" {{\n    special_use = {flag}\n    auto = no\n  }}\n"
            for name, flag in _SPECIAL_USE.items()
        )
        if not self.validate_fs_names:
            mail_location += ":NO-FS-VALIDATION"
        if self.starttls:
            assert self.ca_file is not None
            tls = (
                "ssl = yes\n"
                f"ssl_cert = <{self._cert}\n"
                f"ssl_key = <{self._key}\n"
                "ssl_min_protocol = TLSv1.2\n"
            )
            imaps = f"  inet_listener imaps {{\n    address = {self.host}\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
        else:
            tls = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"  # port 0 disables the built-in 993 listener
        capability = f"imap_capability = {self.imap_capability}\n" if self.imap_capability else ""
        if self.max_keyword_length is not None:
            capability += f"mail_max_keyword_length = {self.max_keyword_length}\n"
        # Enough processes for max_userip_connections sessions of several users at once.
        process_limit = max(100, 4 * self.max_userip_connections)
        return f"""\
# Generated by bench/harness/dovecot.py for fastsync tests; do not edit, it is rewritten on start.
# Started with "dovecot -F -c <this file>", so /etc/dovecot is never read.
base_dir = {self.base_dir}
state_dir = {self.root / "state"}
instance_name = fastsync-{self.port}
log_path = {self.log_path}
protocols = imap
listen = {self.host}
shutdown_clients = yes
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = 0
first_valid_gid = {gid}
{chroot}
# Authentication: plain passwords over the plain port too (tests do not need TLS).
disable_plaintext_auth = no
auth_cache_size = 0
# Failed logins answer at once instead of after the default 2 s (tests try bad passwords).
auth_failure_delay = 0
{self._auth_config()}userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}
}}

# Storage: speed over durability unless fsync=True, this data is thrown away.
mail_location = {mail_location}
mail_fsync = {"optimized" if self.fsync else "never"}
mailbox_list_index = yes
{self._quota_config()}{format_tuning}mail_max_userip_connections = {self.max_userip_connections}
{capability}
# RFC 6154 SPECIAL-USE: the roles are declared here but auto = no, so the folders exist
# only once created; a test that creates "Sent" then sees it flagged \\Sent.  The names
# are relative to the namespace prefix: with prefix "INBOX." the folder is "INBOX.Sent".
namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix = {self.namespace_prefix}
{mailboxes}}}
{self._gmail_config()}
{self._zlib_config()}
{tls}
default_process_limit = {process_limit}
default_client_limit = {max(1000, 2 * process_limit + 100)}

service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
{imaps}  # "High-performance mode": long-lived login processes instead of one fork per connection.
  service_count = 0
  process_min_avail = 1
}}
service imap {{
  process_limit = {process_limit}
}}
service anvil {{
  # Disables the auth penalty (doc.dovecot.org "Authentication penalty"): otherwise,
  # after one failed login, every login from 127.0.0.1 waits up to 15 s.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  # passwd-file sits under `root`, which may be unreadable for the "dovecot" user.
  user = {"root" if root_mode else internal}
}}
"""

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        user, password = next(iter(self.users.items()), (None, None))
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._master is not None and self._master.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with status {self._master.returncode}\n"
                    f"--- {self.log_path} ---\n{self.log_tail()}\n"
                    f"--- master.stderr ---\n{(self.root / 'master.stderr').read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    pass
                if user is None:
                    return
                client = imapclient.IMAPClient(self.host, self.port, ssl=False, timeout=5)
                try:
                    client.login(user, password)
                    client.list_folders()  # forces the mail process to open the store
                finally:
                    try:
                        client.logout()
                    except Exception:  # noqa: BLE001 - best effort
                        pass
                return
            except (OSError, imapclient.exceptions.IMAPClientError) as error:
                last = error
                time.sleep(0.05)
        raise DovecotError(
            f"dovecot did not accept a LOGIN on {self.host}:{self.port} within {timeout:.0f} s "
            f"(last error: {last!r})\n--- {self.log_path} ---\n{self.log_tail()}"
        )


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in process group ``pgid``.

    Zombies are ignored: once the master is gone its children are re-parented to PID 1,
    which may reap them only later, and a zombie holds no port, file or lock.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():  # not Linux: ask the kernel about the group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...  (proc(5))
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
