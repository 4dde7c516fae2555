#!/usr/bin/env bash
# Everything CI checks: setup, lint, format, types, tests. Extra arguments go to pytest.
# Every step runs even if an earlier one failed, so one run shows all problems.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh

bin=.venv/bin
failed=()

step() {
    local name=$1
    shift
    printf '\n== %s\n' "$name"
    local rc=0
    "$@" || rc=$?
    if [[ $name == pytest && $rc -eq 5 ]]; then
        echo "pytest collected no tests: that is a failure, not a pass"
    fi
    if ((rc != 0)); then
        failed+=("$name (exit $rc)")
    fi
}

step "ruff check" "$bin/ruff" check .
step "ruff format" "$bin/ruff" format --check .
step "mypy" "$bin/mypy"
step pytest "$bin/pytest" -q "$@"

if ((${#failed[@]})); then
    printf '\nFAILED: %s\n' "${failed[*]}"
    exit 1
fi
printf '\nall checks passed\n'
