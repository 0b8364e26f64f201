"""Desired vs installed: diffing, incremental passes, the reconciler that owns
the bundle, learned affinity entries and conntrack flushes."""
