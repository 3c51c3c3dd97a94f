# Sourced by demo.sh and test.sh: make .venv hold the pinned environment, once.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,s3]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
