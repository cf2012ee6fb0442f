"""What a migration manager reads: the report page, its CSV and JSON, and the command told
when a run ends (``--report DIR``, ``fastsync report``, ``--notify CMD``).  Output layer,
beside `progress.py`: it renders result records, it decides nothing."""
