"""Assemble the web app: the HTTP API (with ``--api`` or ``--nowebui``) and the Gradio UI on one
FastAPI application, served by uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket

import gradio as gr
import uvicorn
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from starlette.routing import Mount

from modules.core.flags import is_non_local, server_name, server_port
from modules.service.api.auth import basic_auth_dependency, parse_credentials
from modules.service.api.body_limit import BodyLimit
from modules.service.api.endpoints import create_api, task_progress_of
from modules.service.api.models import TaskProgressBody, TaskProgressResponse
from modules.service.api.routes import API_PREFIX
from modules.service.gallery import thumbnails_dir
from modules.service.generation import GenerationService
from modules.ui.app import CSS, build_ui
from modules.ui.extension_assets import head_html, servable_roots

log = logging.getLogger("hanga")


def build_app(service: GenerationService, flags: argparse.Namespace) -> FastAPI:
    app = FastAPI(title="Hanga", docs_url=None, redoc_url=None, openapi_url=None)
    if flags.api or flags.nowebui:
        api_auth = parse_credentials(flags.api_auth)
        dependencies = [Depends(basic_auth_dependency(api_auth))] if api_auth else []
        app.mount(API_PREFIX, create_api(service, flags, dependencies))
        app.add_api_route("/docs", lambda: RedirectResponse(f"{API_PREFIX}/docs"), include_in_schema=False)

        def internal_progress(body: TaskProgressBody) -> TaskProgressResponse:
            """A1111's path for the progress of one task (``force_task_id``), queue place included."""
            return task_progress_of(service, body)

        app.add_api_route("/internal/progress", internal_progress, methods=["POST"], dependencies=dependencies,
                          response_model=TaskProgressResponse, include_in_schema=False)
    _add_cors(app, flags)
    app.add_middleware(BodyLimit, limit_bytes=lambda: service.settings.get("limit_max_upload_mb") * 2**20)
    if not flags.nowebui:
        ui_auth = _gradio_credentials(flags)
        host = getattr(service, "extensions", None)
        folders = [extension.path for extension in host.active] if host is not None else []
        _add_file_route(app, servable_roots(service.paths, folders), service.paths.install)
        demo = build_ui(service, extension_access=extension_actions_allowed(flags), flags=flags)
        app = gr.mount_gradio_app(
            app,
            demo,
            path="",
            auth=ui_auth or None,
            allowed_paths=[str(service.paths.outputs), str(thumbnails_dir(service.paths))],
            max_file_size=f"{service.settings.get('limit_max_upload_mb')}mb",
            css=CSS,
            head=head_html(service.paths, folders, service.settings.data()),
            footer_links=["api"] if flags.api else [],
        )
        service.callbacks.call("app_started", demo, app)
        _page_last(app)
    return app


def extension_actions_allowed(flags: argparse.Namespace) -> bool:
    """A1111's gate: installing or switching extensions runs code, so a server reachable from other
    machines refuses it unless --enable-insecure-extension-access."""
    return not is_non_local(flags) or bool(flags.enable_insecure_extension_access)


def _page_last(app: FastAPI) -> None:
    """The page is mounted at the root and would answer every path: keep it behind the routes
    extensions added in ``on_app_started``."""
    page = [route for route in app.router.routes if isinstance(route, Mount) and route.path == ""]
    for route in page:
        app.router.routes.remove(route)
        app.router.routes.append(route)


def _add_file_route(app: FastAPI, roots: list[Path], base: Path) -> None:
    """A1111's ``/file=<path>``: extensions' scripts, styles and data. A relative path resolves
    against the install folder; only files under ``roots`` are served (no traversal)."""
    resolved_roots = [root.resolve() for root in roots]

    def serve_file(path: str):
        wanted = Path(path)
        target = (wanted if wanted.is_absolute() else base / wanted).resolve()
        if not target.is_file() or not any(target == root or target.is_relative_to(root) for root in resolved_roots):
            raise HTTPException(404, "not found")
        return FileResponse(target, headers={"Cache-Control": "no-cache"})

    app.add_api_route("/file={path:path}", serve_file, methods=["GET"], include_in_schema=False)


def _add_cors(app: FastAPI, flags: argparse.Namespace) -> None:
    """``--cors-allow-origins`` (comma-separated) and ``--cors-allow-origins-regex``."""
    origins = [origin.strip() for origin in (flags.cors_allow_origins or "").split(",") if origin.strip()]
    if origins or flags.cors_allow_origins_regex:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=flags.cors_allow_origins_regex or None,
                           allow_methods=["*"], allow_headers=["*"], allow_credentials=True)


def _gradio_credentials(flags: argparse.Namespace) -> list[tuple[str, str]]:
    text = flags.gradio_auth or ""
    if flags.gradio_auth_path:
        with open(flags.gradio_auth_path, encoding="utf-8") as handle:
            text = ",".join(filter(None, [text, handle.read()]))
    return parse_credentials(text)


def free_port(host: str, first: int, explicit: bool) -> int:
    """The requested port; without ``--port``, the first free one from 7860 (like Gradio)."""
    for port in ([first] if explicit else range(first, first + 100)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return port
            except OSError:
                continue
    raise SystemExit(f"Port {first} on {host} is in use; choose another with --port.")


def exposure_warnings(flags: argparse.Namespace) -> list[str]:
    """What to shout at start-up when the server is reachable from other machines without a login."""
    if not is_non_local(flags):
        return []
    warnings = []
    if not flags.nowebui and not (flags.gradio_auth or flags.gradio_auth_path):
        warnings.append("the UI is reachable from other machines WITHOUT A LOGIN: anyone on the network can use it. "
                        "Add --gradio-auth user:password.")
    if (flags.api or flags.nowebui) and not flags.api_auth:
        warnings.append("the API is reachable from other machines WITHOUT A LOGIN. Add --api-auth user:password.")
    return warnings


def serve(app: FastAPI, flags: argparse.Namespace) -> None:
    for warning in exposure_warnings(flags):
        log.warning("*** %s ***", warning)
    host = server_name(flags)
    port = free_port(host, server_port(flags), explicit=bool(flags.port))
    log.info("Running on local URL:  http://%s:%d", host if host != "0.0.0.0" else "127.0.0.1", port)
    # A bounded graceful shutdown: open browser tabs keep event streams alive, and Ctrl+C must not
    # wait for them forever.
    uvicorn.run(app, host=host, port=port, timeout_keep_alive=flags.timeout_keep_alive,
                timeout_graceful_shutdown=3, log_level="warning")
