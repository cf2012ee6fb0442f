"""The Message-Id rewriting proxy (bench/harness/rewriteproxy.py) in front of a real Dovecot:
every appended message is stored with a new Message-Id, at the same size, otherwise unchanged.

tests/unit/test_rewriteproxy.py checks it on byte streams, whatever their chunking.
"""

from __future__ import annotations

import datetime as dt

import imapclient

from bench.harness.rewriteproxy import RewritingProxy
from tests.dovecot.accounts import AccountFactory
from tests.helpers import MESSAGE_ID_LINE, mail, outside_ids

BIG = mail(99, body=b"x" * 200_000 + b"\r\n")  # larger than one recv() of the proxy (64 KiB)


def test_rewriting_proxy_in_front_of_dovecot(accounts: AccountFactory) -> None:
    [account] = accounts(1)
    date = dt.datetime(2018, 1, 1, 10, 0, tzinfo=dt.UTC)
    sent = {b"<id%d@example.org>" % n: mail(n) for n in (1, 2, 3)}
    sent[b"<id99@example.org>"] = BIG
    client_direct = account.client()
    try:
        client_direct.create_folder("Work")
    finally:
        client_direct.logout()
    with RewritingProxy(account.server.port) as proxy:
        client = imapclient.IMAPClient("127.0.0.1", proxy.port, ssl=False, timeout=30)
        try:
            client.login(account.user, account.password)
            assert b"LITERAL+" in client.capabilities()
            client.append("INBOX", mail(1), (b"\\Seen",), date)  # imaplib: a synchronising literal
            client.multiappend("Work", [{"msg": mail(2)}, {"msg": mail(3), "flags": [b"\\Flagged"]}, {"msg": BIG}])
        finally:
            client.logout()
        assert len(proxy.rewritten) == 4

    stored: dict[bytes, bytes] = {}
    client = account.client()
    try:
        for folder in ("INBOX", "Work"):
            client.select_folder(folder, readonly=True)
            for data in client.fetch(client.search(), ["BODY.PEEK[]", "RFC822.SIZE"]).values():
                assert data[b"RFC822.SIZE"] == len(data[b"BODY[]"])
                found = MESSAGE_ID_LINE.search(data[b"BODY[]"])
                assert found is not None
                stored[found.group(1).strip()] = data[b"BODY[]"]
    finally:
        client.logout()
    new_of = dict(proxy.rewritten)
    assert set(new_of) == set(sent)
    assert set(stored) == set(new_of.values())  # every message is stored with its new id...
    for old, message in sent.items():
        kept = stored[new_of[old]]
        assert len(kept) == len(message)  # ...the same size...
        assert outside_ids(kept) == outside_ids(message)  # ...and otherwise the same bytes
