"""Forecasts → plans: feed replicas per hour (the rule the Ray Serve autoscaling policy applies),
upload workers and storage, and the minute-by-minute replay that judges them."""
