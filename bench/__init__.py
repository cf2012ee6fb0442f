"""Test and benchmark harness for fastsync: private Dovecot instances and a reproducible mail corpus."""
