"""The protocol edge: the only package that speaks IMAP.

`transport` (metered sockets, TLS, logging in, the imaplib internals fastsync pipelines
over) and `session` (IMAP operations returning `fastsync.records.model` records) are the only
modules that import imapclient or imaplib; `replies` is the one place where a server's
reply text becomes a meaning (a response code, throttling, "already exists") as a typed
exception of `fastsync.records.errors`.  Nothing above this package sees an imapclient value.
"""
