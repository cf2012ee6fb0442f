"""The engine: one entry (`engine.run`) that surveys both sides, copies in a process pool and remembers runs."""
