"""The commands: `show`, `sync`, `check` and `batch`, one ``run(...)`` each.

A command hands one request to the engine's entry (`engine.run.run`) or, for a batch, to
the batch package's scheduler, and returns the result record that `cli.py` renders.
Commands never import each other: what they share lives in the layers below.
"""
