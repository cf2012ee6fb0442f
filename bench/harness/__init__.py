"""Local servers and proxies that the tests and the benchmarks share: ``dovecot`` starts a private,
throwaway Dovecot on a loopback port; ``corpus`` generates reproducible mail and seeds an account
with it; ``verify`` compares two accounts message by message; ``tcpproxy`` counts bytes and
connections on the wire and injects faults, ``rewriteproxy`` (built on it) gives every APPENDed
message a new Message-Id, and ``wanproxy`` adds delay and a bandwidth cap.

Nothing here imports the benchmarks (the rest of ``bench``) or fastsync's internals beyond one
rule (``verify`` compares flags as fastsync does); importing a module starts nothing.
"""
