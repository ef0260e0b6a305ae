"""Prefetch from engagement predictions: planner, Redis and CDN warmers, trace replay.

Not built yet (issue 5); the serving path does not depend on it.
"""
