#!/usr/bin/env bash
# Install the peer libraries the benchmarks compare against into their own virtualenv,
# <repo>/.venv-bench, away from the project's .venv (their dependencies never touch it):
#   its-hub[lm]  inference-time scaling (best-of-n, self-consistency, beam search, particle filtering);
#                its [lm] extra is light (openai, aiohttp, backoff, requests: no torch)
#   langgraph    the orchestration peer of bench/orchestration.py
# Idempotent: does nothing when both are importable from .venv-bench.
# Usage: scripts/install_bench.sh   (ITS_HUB_SPEC / LANGGRAPH_SPEC to pin, e.g. its-hub[lm]==1.2.0)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${REPO_ROOT}/.venv-bench"
ITS_HUB_SPEC="${ITS_HUB_SPEC:-its-hub[lm]==1.2.0}"
LANGGRAPH_SPEC="${LANGGRAPH_SPEC:-langgraph}"
PYTHON="${PYTHON:-python3}"

if [[ -x "${VENV}/bin/python" ]] && "${VENV}/bin/python" -c "import its_hub, langgraph, openai" 2>/dev/null; then
    echo "bench peers already installed in ${VENV}"
    exit 0
fi

if [[ -L "${VENV}" && ! -e "${VENV}" ]]; then
    VENV="$(readlink -f "${VENV}")"   # a worktree's symlink to a shared venv not made yet: make it there
fi
if [[ ! -x "${VENV}/bin/python" ]]; then
    echo "creating ${VENV} with $("${PYTHON}" --version 2>&1)"
    "${PYTHON}" -m venv "${VENV}"
fi
"${VENV}/bin/python" -m pip install --quiet --upgrade pip
"${VENV}/bin/python" -m pip install --quiet "${ITS_HUB_SPEC}" "${LANGGRAPH_SPEC}"

"${VENV}/bin/python" -c "import its_hub, langgraph, openai" \
    || { echo "error: pip finished but its_hub/langgraph do not import from ${VENV}" >&2; exit 1; }
"${VENV}/bin/python" -m pip show its-hub langgraph | grep -E '^(Name|Version):'
echo "installed: ${VENV}"
