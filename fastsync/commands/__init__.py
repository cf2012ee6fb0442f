"""The commands: `show`, `sync` and `check`, one ``run(config, options, reporter)`` each.

Commands never import each other: what they share (folder pairing, the survey of both
sides, identity matching, the flag rule) lives in the layers below.
"""
