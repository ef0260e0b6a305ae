"""Offline judges of prefetch: byte-sized cache policies, the trace replay, its plots and the
live check through the real edge. Nothing a serving replica imports."""
