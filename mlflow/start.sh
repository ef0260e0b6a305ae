#!/usr/bin/env bash
# Run the MLflow tracking server in the foreground with the stack's configuration
# (127.0.0.1, sqlite backend, proxied artifacts under .feedcast/stack/mlflow).
# `feedcast stack up` starts the same server in the background; use this to watch its log.
# No __init__.py in this folder, ever: a package named mlflow here would shadow the real one.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m stack.mlflow_server
