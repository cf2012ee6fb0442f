"""`fastsync show`: the folders of both accounts and the mapping a sync would use.

Read-only on both sides: LIST, STATUS and, where STATUS=SIZE (RFC 8438) is missing,
EXAMINE plus a FETCH of RFC822.SIZE.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastsync.config import Account, Config
from fastsync.errors import FolderError
from fastsync.model import Folder, FolderPair, FolderStatus
from fastsync.progress import Reporter, human_bytes
from fastsync.session import Session
from fastsync.sync import Options, pair_folders, rules_from


@dataclass(frozen=True)
class FolderInfo:
    folder: Folder
    status: FolderStatus | None
    error: str = ""


@dataclass(frozen=True)
class AccountInfo:
    account: Account
    capabilities: tuple[str, ...]
    folders: tuple[FolderInfo, ...]


def survey(session: Session, reporter: Reporter) -> AccountInfo:
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
                session.examine(folder.name)
                size = session.total_size(status.messages)
                status = FolderStatus(status.messages, size, status.uidvalidity, status.uidnext)
            elif status.size_bytes < 0:
                status = FolderStatus(0, 0, status.uidvalidity, status.uidnext)
            infos.append(FolderInfo(folder, status))
        except FolderError as exc:
            infos.append(FolderInfo(folder, None, exc.message))
    reporter.clear_status()
    return AccountInfo(session.account, tuple(sorted(session.capabilities)), tuple(infos))


def run(config: Config, options: Options, reporter: Reporter) -> tuple[AccountInfo, AccountInfo, list[FolderPair]]:
    infos = []
    for account in (config.src, config.dst):
        with Session.open(account) as session:
            infos.append(survey(session, reporter))
    src, dst = infos
    pairs = pair_folders(
        [i.folder for i in src.folders], [i.folder for i in dst.folders], rules_from(config, options)
    )
    for info in (src, dst):
        render_account(info, reporter)
    render_pairs(pairs, reporter)
    return src, dst, pairs


def render_account(info: AccountInfo, reporter: Reporter) -> None:
    account = info.account
    side = account.side
    if reporter.verbose:
        reporter.detail(f"{account.label} ({account.server}) capabilities: {' '.join(info.capabilities)}")
    headers = ["side", "folder", "messages", "size", "bytes", "special-use"]
    if reporter.verbose:
        headers += ["delimiter", "uidvalidity", "uidnext", "attributes"]
    rows = []
    for item in info.folders:
        status = item.status
        row: list[object] = [
            side,
            item.folder.name,
            status.messages if status else "-",
            human_bytes(status.size_bytes) if status else "-",
            status.size_bytes if status else "-",
            item.folder.special_use or "-",
        ]
        if reporter.verbose:
            row += [
                item.folder.delimiter or "NIL",
                status.uidvalidity if status else "-",
                status.uidnext if status else "-",
                " ".join(item.folder.attributes) or "-",
            ]
        if item.error:
            row[2] = f"error: {item.error}"
        rows.append(row)
    total_messages = sum(i.status.messages for i in info.folders if i.status)
    total_bytes = sum(i.status.size_bytes for i in info.folders if i.status)
    reporter.table(
        f"{account.label} ({account.server}, {account.user}): {len(info.folders)} folders, "
        f"{total_messages} messages, {human_bytes(total_bytes)}",
        headers,
        rows,
    )


def render_pairs(pairs: list[FolderPair], reporter: Reporter) -> None:
    rows = [["map", p.src, p.dst, p.reason or "same name"] for p in pairs]
    reporter.table("Folder mapping used by sync", ["", "source", "destination", "why"], rows)
