"""The judge: rankers against the simulator's hidden truth. The only package that may import
``simulator.truth`` (an import-linter contract in ``make lint``)."""
