"""Benchmarks of fastsync against its peers (``python -m bench``), on private Dovecot servers from
``bench.harness``, the subpackage the tests use too."""
