# Shared set-up for the project's scripts: a virtualenv in .venv with kubemr installed.
# Usage: source scripts/_env.sh [extras]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KUBEMR_CACHE="${KUBEMR_CACHE:-$HOME/.cache/kubemr}"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
extras="${1:-}"
stamp="$VENV/.installed${extras:+-$extras}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the package metadata changed.
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT${extras:+[$extras]}"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
