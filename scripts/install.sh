#!/usr/bin/env bash
# Create .venv and install feedcast with its dev tools. Uses uv (installed with pip if missing);
# honours a pip find-links folder (where a CPU-only torch wheel may live) for uv as well.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}

need() { command -v "$1" >/dev/null 2>&1 || { echo "error: $1 not found: $2" >&2; exit 2; }; }
need python3 "install Python 3.11"
need java "install JDK 17 (apt-get install openjdk-17-jre-headless)"
need mvn "install Maven (apt-get install maven)"

export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv with pip"
  python3 -m pip install -q --user uv || python3 -m pip install -q uv
  export PATH="$HOME/.local/bin:$PATH"
fi

links=()
fl=${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
[[ -n $fl && -d $fl ]] && links=(--find-links "$fl")

[[ -x $venv/bin/python ]] || uv venv -q --python 3.11 "$venv"
uv pip install -q --python "$venv/bin/python" --compile-bytecode "${links[@]}" -e . --group dev
echo "installed feedcast into $venv"
