#!/usr/bin/env bash
# Installs everything the test suite needs (virtual environment, requirements, test requirements,
# Debian's chromium for the browser tests) and runs it. Extra arguments go to pytest.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

python_cmd="${python_cmd:-python3}"
venv_dir="${venv_dir:-venv}"

if [[ ! -x "${venv_dir}/bin/python" ]]; then
    "${python_cmd}" -m venv "${venv_dir}"
fi
# shellcheck source=/dev/null
source "${venv_dir}/bin/activate"

stamp="${venv_dir}/.test-requirements.sha256"
wanted="$(cat requirements.txt requirements-test.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${wanted}" ]]; then
    python -m pip install --quiet --upgrade pip
    python -m pip install --quiet -r requirements.txt -r requirements-test.txt
    echo "${wanted}" > "${stamp}"
fi

# Browser tests drive Debian's chromium through Playwright (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1; then
    if [[ "$(id -u)" == "0" ]]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing: install Debian's 'chromium' package for the browser tests" >&2
    fi
fi

export HF_HUB_OFFLINE=1
exec python -m pytest "$@"
