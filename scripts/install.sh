#!/usr/bin/env bash
# Create .venv and install feedcast (editable, so .venv/bin/feedcast exists) with its dev tools,
# exactly as pinned in uv.lock (`uv sync --frozen`; `make lock` refreshes the lock). Uses uv
# (installed with pip if missing). Idempotent: a re-run changes nothing and takes seconds.
#
# torch comes one of two ways, the same version (the lock's) either way:
#  - By default (a fresh machine): PyPI's CUDA build as locked, with the nvidia-* and triton
#    wheels it pulls in (several GB; it runs on a CPU as well).
#  - Where pip has a local find-links folder (PIP_FIND_LINKS, else `pip config get
#    global.find-links`; /opt/wheels on our machines) holding the CPU build of the locked version
#    (torch-<version>+cpu-cp311-cp311-*.whl): everything else still comes from the lock, but the
#    sync leaves out torch and the CUDA-only packages only it needs (nvidia-*, cuda-*, triton), and
#    torch <version>+cpu is installed from that folder alone (--no-index --no-deps; its own
#    dependencies are the locked ones; the sync is --inexact there, see below). A folder without
#    that exact version changes nothing.
#    A plain `uv sync` or `uv run` would put PyPI's build back (the lock knows no +cpu build);
#    run this script (`make install`) instead: it passes the same exclusions on every run, so a
#    re-run keeps the CPU build and reinstalls nothing.
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

[[ -x $venv/bin/python ]] || uv venv -q --python 3.11 "$venv"
export UV_PROJECT_ENVIRONMENT=$venv  # where `uv sync` installs

# The locked torch version and the CUDA-only packages that nothing but torch needs (nvidia-*,
# cuda-*, triton; the +cpu wheel requires none of them).
read -ra locked < <("$venv/bin/python" - <<'EOF'
import tomllib

pkgs = {p["name"]: p for p in tomllib.load(open("uv.lock", "rb"))["package"]}


def deps(name, groups=False):  # what a locked package pulls in, with the extras it asks for
    p = pkgs[name]
    ds = p.get("dependencies", [])
    if groups:
        ds = ds + [d for g in p.get("dev-dependencies", {}).values() for d in g]
    for d in ds:
        yield d["name"]
        for extra in d.get("extra", []):
            opt = pkgs[d["name"]].get("optional-dependencies", {}).get(extra, [])
            yield from (x["name"] for x in opt)


def reach(roots, stop=()):
    seen, todo = set(), list(roots)
    while todo:
        n = todo.pop()
        if n not in seen and n not in stop:
            seen.add(n)
            todo += deps(n)
    return seen


project = next(n for n, p in pkgs.items() if "editable" in p["source"])
others = reach(deps(project, groups=True), stop={"torch"})
only = reach(["torch"]) - others
cuda = [n for n in only if n.startswith(("nvidia-", "cuda-")) or n == "triton"]
print(pkgs["torch"]["version"], *sorted(cuda))
EOF
)
torch_version=${locked[0]:-}
cuda_only=("${locked[@]:1}")
[[ -n $torch_version ]] || { echo "error: no torch in uv.lock" >&2; exit 2; }

# A CPU build of exactly that version in a pip find-links folder, if there is one.
cpu_dir=
links=${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}
read -ra link_dirs <<<"$links"
shopt -s nullglob
for d in "${link_dirs[@]}"; do
  d=${d#file://}
  wheels=("$d/torch-$torch_version+cpu-cp311-cp311-"*"_$(uname -m).whl")
  if [[ -d $d && ${#wheels[@]} -gt 0 ]]; then cpu_dir=$d; break; fi
done
shopt -u nullglob

sync=(uv sync -q --frozen --group dev --compile-bytecode)
if [[ -z $cpu_dir ]]; then
  "${sync[@]}"
  echo "installed feedcast into $venv from uv.lock (torch $torch_version from PyPI)"
else
  skip=()
  for p in torch "${cuda_only[@]}"; do skip+=(--no-install-package "$p"); done
  # --inexact: an exact sync would uninstall the CPU torch on every run (the lock has no such
  # build), and installing it again costs 10-30 s of bytecode compiling. The price: a package that
  # a later lock drops stays in this venv until it is made afresh (`make clean install`).
  "${sync[@]}" --inexact "${skip[@]}"
  if ((${#cuda_only[@]})); then  # left behind by an earlier install of PyPI's build; else no-op
    uv pip uninstall -q --python "$venv/bin/python" "${cuda_only[@]}"
  fi
  uv pip install -q --python "$venv/bin/python" --compile-bytecode --no-deps --no-index \
    --find-links "$cpu_dir" "torch==$torch_version+cpu"
  echo "installed feedcast into $venv from uv.lock (torch $torch_version+cpu from $cpu_dir)"
fi
