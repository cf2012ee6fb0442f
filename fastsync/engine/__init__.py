"""The engine, entered in one place: `fastsync.engine.run.run(RunRequest, reporter)`.

Every command and every batch pair calls that entry (`run.py`); beneath it, the survey of
both sides and the diff (`planner.py`), a sync pass (`syncpass.py`) and the watch
(`watch.py`), the process pool that copies (`pool.py`, `transfer.py`), check's comparison
(`check.py`) and show's listing (`listing.py`), and what lasts between runs (`state.py`,
`ledger.py`, `lock.py`).  This package's own import is empty on purpose: the fork
server preloads `pool` and the command line imports `processes` before anything else, and
neither should pay for the rest.
"""
