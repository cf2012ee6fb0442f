"""fastsync: mirror folders from one IMAP account to another, fast, losing nothing."""

__version__ = "0.1.0"
