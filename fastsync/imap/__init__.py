"""The protocol edge: the only package that speaks IMAP (the engine's driver).

`transport` (metered sockets, TLS, logging in, the imaplib internals fastsync pipelines
over) and `session` (IMAP operations returning `fastsync.records.model` records) are the only
modules that import imapclient or imaplib; `replies` is the one place where a server's
reply text becomes a meaning (a response code, throttling, "already exists") as a typed
exception of `fastsync.records.errors`.  Nothing above this package sees an imapclient value.

The contract: session-scoped operations (LIST, STATUS, NAMESPACE, CREATE, APPEND) are
`session.Session` methods; folder-scoped ones (FETCH, SEARCH, STORE, EXPUNGE) belong to the
`folder.SelectedFolder` that `Session.examine` or `Session.select` returns, which acts on its
own folder or raises; what a server offers is `capabilities.Capabilities`, asked by name.
A server's quirk is handled in this package, never above it.
"""
