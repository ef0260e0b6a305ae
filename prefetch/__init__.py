"""Prefetch from engagement predictions: the planner, the Redis and CDN warmers the replicas
import, the ahead-of-session job; the offline trace replay lives in ``prefetch.replay``."""
