"""A1111 facade: the ``launch`` module extensions' ``install.py`` files import (``is_installed``,
``run_pip`` …), from ``modules.launch_utils``. Importing it has no side effects; Hanga starts from
``webui.py``."""

from __future__ import annotations

from typing import Any

from modules import launch_utils
from modules.launch_utils import (commit_hash, constraints_file, dir_repos, git, git_tag, index_url,  # noqa: F401
                                  is_installed, pip_command, python, run, run_pip, script_path)

__all__ = ["commit_hash", "constraints_file", "dir_repos", "git", "git_tag", "index_url", "is_installed",
           "pip_command", "python", "run", "run_pip", "script_path"]


def __getattr__(name: str) -> Any:  # PEP 562: ``launch.args`` follows the running server's flags
    if name == "args":
        return launch_utils.args
    raise AttributeError(f"module 'launch' has no attribute {name!r}")
