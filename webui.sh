#!/usr/bin/env bash
# Hanga launcher (Linux/macOS): creates or reuses a virtual environment, installs the requirements
# when they changed, then runs webui.py with COMMANDLINE_ARGS from webui-user.sh plus its own args.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

if [[ -f webui-user.sh ]]; then
    # shellcheck source=webui-user.sh
    source webui-user.sh
fi

python_cmd="${python_cmd:-python3}"
venv_dir="${venv_dir:-venv}"
REQS_FILE="${REQS_FILE:-requirements.txt}"
export COMMANDLINE_ARGS="${COMMANDLINE_ARGS:-}"
export GRADIO_ANALYTICS_ENABLED="False"

if [[ "${venv_dir}" != "-" ]]; then
    if [[ ! -x "${venv_dir}/bin/python" ]]; then
        echo "Creating virtual environment in ${venv_dir}"
        "${python_cmd}" -m venv "${venv_dir}"
    fi
    # shellcheck source=/dev/null
    source "${venv_dir}/bin/activate"
    python_cmd="python"
fi

# Install only when the requirements file changed since the last successful install.
stamp="${venv_dir}/.requirements.sha256"
[[ "${venv_dir}" == "-" ]] && stamp=".requirements.sha256"
wanted="$(sha256sum "${REQS_FILE}" | cut -d' ' -f1)"
if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${wanted}" ]]; then
    echo "Installing requirements from ${REQS_FILE}"
    "${python_cmd}" -m pip install --upgrade pip
    "${python_cmd}" -m pip install -r "${REQS_FILE}"
    echo "${wanted}" > "${stamp}"
fi

# COMMANDLINE_ARGS is read by webui.py itself (shell-quoting rules, like A1111).
exec "${python_cmd}" -u webui.py "$@"
