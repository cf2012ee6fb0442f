"""The folders of both accounts and the mapping a sync would use: what `fastsync show` lists.

Engine layer, reached through the entry (`run.py`, `Mode.SHOW`).  Read-only on both
sides: LIST, STATUS and, where STATUS=SIZE (RFC 8438) is missing, EXAMINE plus a FETCH
of RFC822.SIZE.  `progress.py` renders the `Listing`.
"""

from __future__ import annotations

from fastsync.engine.connecting import ConnectSteps
from fastsync.engine.planner import namespace_of
from fastsync.imap.session import Session
from fastsync.records.errors import FolderError
from fastsync.records.model import FolderStatus
from fastsync.records.results import AccountInfo, FolderInfo, Listing, Reporter
from fastsync.rules import folders as folder_rules
from fastsync.settings.config import Config
from fastsync.settings.options import Options


def list_accounts(config: Config, options: Options, reporter: Reporter) -> Listing:
    """Both accounts' folders, the pairs a sync would use, those it leaves out and why."""
    infos = []
    steps = ConnectSteps(reporter)
    for account in (config.src, config.dst):
        with Session.open(account, step=steps.of(account)) as session:
            infos.append(describe(session, reporter))
    src, dst = infos
    pairs, left_out = folder_rules.sort_out(
        [i.folder for i in src.folders], [i.folder for i in dst.folders], folder_rules.rules_from(config, options),
        src.namespace, dst.namespace, options.include,
    )
    taken, excluded = folder_rules.filter_pairs(pairs, options.include, options.exclude)
    return Listing(src, dst, tuple(taken), tuple(left_out), tuple(excluded))


def describe(session: Session, reporter: Reporter) -> AccountInfo:
    """One account's folders with their counts and sizes."""
    folders = session.list_folders()
    infos = []
    for index, folder in enumerate(folders, 1):
        if not folder.selectable:
            infos.append(FolderInfo(folder, None))
            continue
        reporter.status(f"{session.account.label}: sizing folder {index}/{len(folders)} {folder.name}")
        try:
            status = session.status(folder.name)
            if status.size_bytes < 0 and status.messages:
                with session.examine(folder.name) as box:
                    size = box.total_size()
                status = FolderStatus(status.messages, size, status.uidvalidity, status.uidnext)
            elif status.size_bytes < 0:
                status = FolderStatus(0, 0, status.uidvalidity, status.uidnext)
            infos.append(FolderInfo(folder, status))
        except FolderError as exc:
            infos.append(FolderInfo(folder, None, exc.message))
    reporter.clear_status()
    namespace = namespace_of(session, folders)
    account = session.account
    return AccountInfo(
        account.side, account.label, account.server, account.user, tuple(sorted(session.capabilities.names)),
        tuple(infos), namespace,
    )
