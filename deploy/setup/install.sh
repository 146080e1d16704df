#!/usr/bin/env bash
# Create .venv when missing and install the project into it, only when pyproject.toml changed.
# The stamp holds pyproject.toml's hash (not its mtime: a fresh clone has new mtimes).
# A lock makes two concurrent `make test` runs take turns instead of racing pip.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
fi
if [[ -z "$PYTHON" ]]; then
    echo "ERROR: no python3 found: install Python 3.11 (apt-get install python3 python3-venv)" >&2
    exit 1
fi

mkdir -p "$VENV"
exec 9>"$VENV/.install.lock"
flock 9

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "ERROR: $PYTHON is $("$PYTHON" -V 2>&1); the project needs Python 3.11 or newer (set PYTHON=...)" >&2
        exit 1
    fi
    echo "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" || {
        echo "ERROR: '$PYTHON -m venv' failed: install the venv module (apt-get install python3-venv)" >&2
        exit 1
    }
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -qq --upgrade pip 'setuptools>=69' wheel
fi

STAMP="$VENV/.installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    exit 0
fi
echo "installing the project into $VENV (pyproject.toml changed)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -qq -e '.[dev]'
echo "$WANT" >"$STAMP"
