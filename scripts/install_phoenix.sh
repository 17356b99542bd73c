#!/usr/bin/env bash
# Install Arize Phoenix into its own virtualenv, <repo>/.venv-phoenix, away from the project's .venv
# (Phoenix pulls in many dependencies). Idempotent: does nothing when .venv-phoenix/bin/phoenix exists.
# Usage: scripts/install_phoenix.sh            (PHOENIX_SPEC=arize-phoenix==X.Y to pin a version)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-phoenix"
SPEC="${PHOENIX_SPEC:-arize-phoenix}"
PYTHON="${PYTHON:-python3}"

if [[ -x "${VENV}/bin/phoenix" ]]; then
    echo "phoenix already installed: ${VENV}/bin/phoenix"
    exit 0
fi

echo "creating ${VENV} with $("${PYTHON}" --version 2>&1)"
"${PYTHON}" -m venv "${VENV}"
# pip's "WARNING: Location ... is ignored" lines (one per package on machines with a local index) are noise.
quiet_pip() { "${VENV}/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
quiet_pip --upgrade pip
quiet_pip "${SPEC}"

if [[ ! -x "${VENV}/bin/phoenix" ]]; then
    echo "error: pip finished but ${VENV}/bin/phoenix is missing" >&2
    exit 1
fi
"${VENV}/bin/python" -m pip show arize-phoenix | grep -E '^(Name|Version):'
echo "installed: ${VENV}/bin/phoenix"
