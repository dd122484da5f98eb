"""Extensions: the installed list (enable/disable, status, errors), "Apply and restart UI", and
install from a git URL. When the server is reachable from other machines these actions are refused
unless ``--enable-insecure-extension-access`` (A1111's rule)."""

from __future__ import annotations

import html
import logging
import os
import sys
import threading
from typing import Callable

import gradio as gr

from modules.core.generation.request import InvalidRequest
from modules.service.extensions.discovery import Extension
from modules.service.extensions.install import check_for_update, install_from_url, update
from modules.service.generation import GenerationService

log = logging.getLogger("hanga")

REFUSED = ("Extension actions are off because this server is reachable from other machines "
           "(--listen, --share or --server-name); start it with --enable-insecure-extension-access to allow them.")


def _table(extensions: list[Extension]) -> str:
    rows = []
    for extension in extensions:
        errors = "".join(f"<details><summary>error</summary><pre>{html.escape(e)}</pre></details>" for e in extension.errors)
        rows.append(
            f"<tr class='extension-{extension.status}'><td>{html.escape(extension.name)}</td>"
            f"<td>{'built-in' if extension.is_builtin else html.escape(extension.remote or 'local')}</td>"
            f"<td>{html.escape(extension.commit_hash[:8])}</td><td>{html.escape(extension.status)}</td>"
            f"<td>{html.escape(', '.join(extension.scripts))}{errors}</td></tr>")
    head = "<tr><th>Extension</th><th>URL</th><th>Version</th><th>Status</th><th>Scripts / errors</th></tr>"
    return f"<table id='extensions_table'>{head}{''.join(rows)}</table>" if rows else "<p>No extensions installed.</p>"


def restart_process(delay: float = 1.0, before: Callable[[], None] | None = None) -> None:
    """Start Hanga again in this process (same arguments): extensions load anew. ``before`` runs
    first (extensions' ``on_before_reload`` and ``on_script_unloaded`` callbacks)."""
    def again() -> None:
        if before is not None:
            before()
        log.info("Restarting to apply the extension changes…")
        os.execv(sys.executable, [sys.executable, *sys.argv])

    threading.Timer(delay, again).start()


def build(service: GenerationService, allowed: bool) -> None:
    host = service.extensions
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="extensions_installed"):
            names = [e.name for e in host.extensions]
            enabled = gr.CheckboxGroup(names, value=[e.name for e in host.extensions if e.enabled],
                                       label="Enabled extensions", elem_id="extensions_enabled")
            with gr.Row():
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates and update", elem_id="extensions_check")
            gr.HTML(_table(host.extensions), elem_id="extensions_list")
            message = gr.Markdown(elem_id="extensions_message")
        with gr.Tab("Install from URL", id="extensions_install"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extension_url")
            branch = gr.Textbox(label="Specific branch name (empty for the default)", elem_id="extension_branch")
            dirname = gr.Textbox(label="Local directory name (empty for the default)", elem_id="extension_dirname")
            install = gr.Button("Install", variant="primary", elem_id="extension_install")
            installed = gr.Markdown(elem_id="extension_install_result")

    def apply_changes(chosen: list[str]) -> str:
        if not allowed:
            raise gr.Error(REFUSED)
        service.settings.set("disabled_extensions", sorted(set(names) - set(chosen or [])))
        restart_process(before=service.before_restart)
        return "Saved. Hanga restarts now; reload this page in a few seconds."

    def check_updates() -> str:
        """Fetch each git extension's remote, fast-forward the ones behind; they load at restart."""
        if not allowed:
            raise gr.Error(REFUSED)
        lines = []
        for extension in host.extensions:
            if extension.is_builtin:
                continue
            status = check_for_update(extension)
            if status == "behind":
                try:
                    status = f"updated to {update(extension)[:8]}"
                except (OSError, RuntimeError) as error:
                    status = f"update failed: {error}"
            lines.append(f"- **{extension.name}**: {status}")
        if not lines:
            return "No user extensions."
        return "\n".join(lines) + "\n\nUpdated extensions load after **Apply and restart UI**."

    def install_extension(address: str, wanted_branch: str, folder: str) -> str:
        if not allowed:
            raise gr.Error(REFUSED)
        try:
            target = install_from_url(address, service.paths.extension_dirs[0], service.paths.tmp, host.extensions,
                                      dirname=folder or "", branch=wanted_branch or "")
        except InvalidRequest as error:
            raise gr.Error(str(error)) from None
        extension = Extension(target.name, target, is_builtin=False)
        if (target / "install.py").is_file() and not host.run_installer(extension):
            return f"Installed into {target}, but its install.py failed:\n\n```\n{extension.errors[-1]}\n```"
        return f"Installed into {target}. Use **Apply and restart UI** on the Installed tab to load it."

    apply.click(apply_changes, enabled, message)
    check.click(check_updates, None, message)
    install.click(install_extension, [url, branch, dirname], installed)
