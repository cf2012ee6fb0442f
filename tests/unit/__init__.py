"""Tests that need no server: pure logic, config and option handling, the CLI's refusals, the
harness's own parsers.  Nothing here starts Dovecot (tests/conftest.py fails a test that does)."""
