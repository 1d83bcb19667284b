"""Experiments: running chains over datasets, the resumable store, comparisons and reports."""
