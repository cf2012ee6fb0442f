"""``python -m fastsync.pairjob``: the process of one batch pair (see `fastsync.pairjob`)."""

import sys

from fastsync.pairjob import main

if __name__ == "__main__":
    sys.exit(main())
