"""`python -m fastsync`: the same as the `fastsync` command."""

from fastsync.cli import entry_point

if __name__ == "__main__":
    entry_point()
