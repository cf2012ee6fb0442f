"""Many account pairs: the input files, the scheduler under per-server caps, the journal,
and each pair's process (parent and child sides)."""
