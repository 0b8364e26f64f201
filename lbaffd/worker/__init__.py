"""What the daemon's worker loop runs: passes (full, incremental, audit) and
their bookkeeping, the start-up choice of mode, and the tokens the other
threads queue for it."""
