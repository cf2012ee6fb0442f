"""Many account pairs: the batch input files, the journal, and each pair's process (parent and child sides)."""
