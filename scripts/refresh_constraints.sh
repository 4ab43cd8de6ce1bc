#!/usr/bin/env bash
# Write constraints.txt: the exact version of every package installed in .venv (dependencies of
# dependencies too), which `make test`, `make demo` and deploy/Dockerfile install from.
#
# To move to newer versions: widen or raise a bound in pyproject.toml if needed, then
#   .venv/bin/pip install -U -e '.[dev]' && scripts/refresh_constraints.sh
# and run `make test` before committing both files.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
{
  echo "# Exact versions installed (scripts/refresh_constraints.sh); pyproject.toml holds the bounds."
  "$PIP" freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
