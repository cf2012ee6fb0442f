"""fastsync's test suite: ``tests/unit`` (no server: pure logic, seconds in all) and
``tests/dovecot`` (against private Dovecot servers from ``bench.harness``).  Shared by both:
``conftest.py`` (the ``dovecot`` marker, and the check that no other test starts a server),
``helpers.py`` (running the CLI, config files, messages, waiting) and ``wire.py`` (reading
what a client sent)."""
