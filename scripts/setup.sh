#!/usr/bin/env bash
# Idempotent setup on a Debian machine (root, or a user with sudo):
#   1. system packages: python3 + venv, and Mosquitto / InfluxDB for the service tests;
#   2. .venv with klimaflow installed editable, with the dev tools;
#   3. the visual editor (editor/): npm ci and its build, when its lock file or sources changed.
# A repeated run does no apt or pip work unless something is missing or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

# -- system packages --------------------------------------------------------------------------
packages=(mosquitto mosquitto-clients influxdb openssl chromium wordpress php-cli php-mysql mariadb-server)
packages+=(firefox-esr) # the editor's Firefox smoke test (driven over Marionette, no geckodriver)
packages+=(docker-compose) # parses docker/docker-compose.yml in tests/docker (no Docker engine needed)
if ! command -v python3 >/dev/null 2>&1; then
    packages+=(python3 python3-venv)
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    packages+=(python3-venv)
fi
# The editor is built with npm; Debian's nodejs/npm do when the machine has no Node.js.
if ! command -v npm >/dev/null 2>&1; then
    packages+=(nodejs npm)
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
else
    say "not a Debian system (no dpkg-query): install ${packages[*]} yourself"
fi

if ((${#missing[@]})); then
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            say "need root or sudo to install: ${missing[*]}"
            exit 1
        fi
    fi
    say "installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    say "klimaflow needs Python 3.11 or newer; python3 is $(python3 --version 2>&1)"
    exit 1
fi

# -- virtual environment ------------------------------------------------------------------------
if [[ -e .venv ]] && ! .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    say ".venv is broken (its Python does not start): recreating it"
    rm -rf .venv
fi
if [[ ! -e .venv ]]; then
    say "creating .venv"
    python3 -m venv .venv
fi

# Reinstall only when the declared dependencies or entry points (pyproject.toml) or Python changed.
stamp_file=.venv/.klimaflow-setup
stamp="$(sha256sum pyproject.toml | cut -d' ' -f1) $(.venv/bin/python -c 'import sys; print(sys.version)')"
if [[ ! -f $stamp_file || $(cat "$stamp_file") != "$stamp" || ! -x .venv/bin/klimaflow ]]; then
    say "installing klimaflow (editable) with dev tools into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
    printf '%s' "$stamp" >"$stamp_file"
fi
# -- visual editor ------------------------------------------------------------------------------
# npm ci when the lock file changed, the build when anything it is built from changed.
if command -v npm >/dev/null 2>&1; then
    lock_stamp=$(sha256sum editor/package-lock.json | cut -d' ' -f1)
    if [[ ! -f editor/node_modules/.klimaflow-lock || $(cat editor/node_modules/.klimaflow-lock) != "$lock_stamp" ]]; then
        say "installing the editor's npm packages (npm ci)"
        (cd editor && npm ci --no-audit --no-fund --loglevel=error)
        printf '%s' "$lock_stamp" >editor/node_modules/.klimaflow-lock
    fi
    build_stamp=$(cd editor && find src build.mjs tsconfig.json package-lock.json -type f -print0 | sort -z |
        xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
    # Built into the package (editor_api/static/), so `pip wheel .` ships it as package data.
    if [[ ! -f editor_api/static/index.html || ! -f editor_api/static/.klimaflow-build || $(cat editor_api/static/.klimaflow-build) != "$build_stamp" ]]; then
        say "building the visual editor (editor_api/static)"
        (cd editor && npm run --silent build)
        printf '%s' "$build_stamp" >editor_api/static/.klimaflow-build
    fi
else
    say "npm not found: the visual editor is not built (install Node.js 20 and npm)"
fi
say "ready: .venv/bin/klimaflow"
