"""Assemble the web app: the HTTP API (with ``--api`` or ``--nowebui``) and the Gradio UI on one
FastAPI application, served by uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import socket

import gradio as gr
import uvicorn
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from starlette.routing import Mount

from modules.core.flags import is_non_local, server_name, server_port
from modules.service.api.auth import basic_auth_dependency, credentials_match, parse_credentials
from modules.service.api.body_limit import BodyLimit
from modules.service.api.endpoints import create_api, task_progress_of
from modules.service.api.models import TaskProgressBody, TaskProgressResponse
from modules.service.api.routes import API_PREFIX
from modules.service.extensions import context
from modules.service.extensions.access import Access, guard_routes_added, session_user_of
from modules.service.gallery import thumbnails_dir
from modules.service.generation import GenerationService
from modules.ui.app import CSS, build_ui
from modules.ui.extension_assets import head_html, servable, servable_roots
from modules.ui.extension_components import add_a1111_classes, announce_rest

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
        access = Access(exposed=is_non_local(flags), open_to_all=bool(flags.enable_insecure_extension_access),
                        credentials=[*ui_auth, *parse_credentials(flags.api_auth)])
        page_access = Access(exposed=is_non_local(flags), credentials=ui_auth)
        private = [Path(flags.gradio_auth_path).expanduser().resolve()] if flags.gradio_auth_path else []
        _add_file_route(app, servable_roots(service.paths, folders, flags.gradio_allowed_path), service.paths.install,
                        page_access, private)
        _add_options_route(app, service, page_access)
        demo = build_ui(service, extension_access=extension_actions_allowed(flags), flags=flags)
        announce_rest(demo, service.scripts)
        add_a1111_classes(demo)
        app = gr.mount_gradio_app(
            app,
            demo,
            path="",
            auth=(lambda user, password: credentials_match(ui_auth, user, password)) if ui_auth else None,
            allowed_paths=[str(service.paths.outputs), str(thumbnails_dir(service.paths))],
            max_file_size=f"{service.settings.get('limit_max_upload_mb')}mb",
            css=CSS,
            head=head_html(service.paths, folders, service.settings.data()),
            footer_links=["api"] if flags.api else [],
        )
        gradio_app = next(route.app for route in app.router.routes if isinstance(route, Mount) and route.path == "")
        access.session_user = page_access.session_user = session_user_of(gradio_app)
        before = list(app.router.routes)
        service.callbacks.call("app_started", demo, app)
        added = guard_routes_added(app.router.routes, before, access)
        context.bind(serving=True)
        if added and access.exposed and not access.open_to_all:
            log.info("Extension routes answer only this machine or a logged-in user: %s", ", ".join(added))
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


def _add_file_route(app: FastAPI, roots: list[Path], base: Path, access: Access, private: list[Path]) -> None:
    """A1111's ``/file=<path>``: extensions' scripts, styles and data. A relative path resolves
    against the install folder; only files under ``roots`` are served (``..`` leading out, links
    leading out, hidden files and folders and private files are not). It asks for the UI's login
    when the UI has one."""
    resolved_roots = [root.resolve() for root in roots]

    def serve_file(path: str, request: Request):
        if not access.page_file_allowed(request):
            raise HTTPException(403, "log in first")
        wanted = Path(path)
        target = (wanted if wanted.is_absolute() else base / wanted).resolve()
        if not servable(target, resolved_roots, private):
            raise HTTPException(404, "not found")
        return FileResponse(target, headers={"Cache-Control": "no-cache"})

    app.add_api_route("/file={path:path}", serve_file, methods=["GET"], include_in_schema=False)


def _add_options_route(app: FastAPI, service: GenerationService, access: Access) -> None:
    """``hanga/opts``: every setting, for the page's ``opts`` after "Apply settings" (A1111 read them
    from a hidden textbox that Gradio 6 does not render)."""

    def options(request: Request) -> dict:
        if not access.page_file_allowed(request):
            raise HTTPException(403, "log in first")
        return json.loads(json.dumps(service.settings.data(), default=str))

    app.add_api_route("/hanga/opts", options, methods=["GET"], include_in_schema=False)


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
