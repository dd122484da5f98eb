"""Who may reach what extensions add to the web server, and the page's ``/file=`` route.

Extension routes (``on_app_started``) run the extension's own code with request data (an image
browser that reads any folder, an installer route that runs pip): on a server reachable from other
machines (``--listen``, ``--share``, ``--server-name``, ``--ngrok``) they answer only a request from
this machine (loopback) or one that logs in (HTTP Basic with an ``--api-auth`` or ``--gradio-auth``
pair, or the UI's login cookie), unless ``--enable-insecure-extension-access`` says otherwise.

``/file=`` is part of the page: it asks for the UI's login when the UI has one, like the page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute

from modules.service.api.auth import basic_auth_matches

LOOPBACK = ("127.0.0.1", "::1", "localhost")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


@dataclass
class Access:
    """``exposed``: reachable from other machines; ``open_to_all``: --enable-insecure-extension-access;
    ``session_user(connection)``: the user of a valid UI login cookie, else None."""

    exposed: bool
    open_to_all: bool = False
    credentials: list[tuple[str, str]] = field(default_factory=list)
    session_user: Callable[[HTTPConnection], str | None] | None = None

    def logged_in(self, connection: HTTPConnection) -> bool:
        if basic_auth_matches(self.credentials, connection.headers.get("authorization", "")):
            return True
        return self.session_user is not None and self.session_user(connection) is not None

    def extension_route_allowed(self, connection: HTTPConnection) -> bool:
        if not self.exposed or self.open_to_all:
            return True
        client = connection.client.host if connection.client else ""
        return client in LOOPBACK or client.startswith("127.") or self.logged_in(connection)

    def page_file_allowed(self, connection: HTTPConnection) -> bool:
        """``/file=``: as the page itself (its login when the UI has one)."""
        return not self.credentials or self.logged_in(connection)


def guarded(app: ASGIApp, allowed: Callable[[HTTPConnection], bool], why: str) -> ASGIApp:
    """``app`` answering 403 (HTTP) or closing (WebSocket) when ``allowed`` says no."""

    async def guard(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and not allowed(HTTPConnection(scope)):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await PlainTextResponse(why, status_code=403)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guard


def guard_routes_added(routes: list[BaseRoute], before: list[BaseRoute], access: Access) -> list[str]:
    """Put the extension-route rule on each route in ``routes`` that is not in ``before``; their paths."""
    known = {id(route) for route in before}
    why = ("Extension routes answer only this machine or a logged-in user when the server is reachable from "
           "other machines (--enable-insecure-extension-access allows everyone).")
    paths = []
    for route in routes:
        if id(route) in known or not hasattr(route, "app"):
            continue
        route.app = guarded(route.app, access.extension_route_allowed, why)
        paths.append(getattr(route, "path", "?"))
    return paths


def session_user_of(gradio_app: Any) -> Callable[[HTTPConnection], str | None]:
    """The UI's login cookie check (Gradio's ``access-token`` cookies)."""

    def user(connection: HTTPConnection) -> str | None:
        cookie_id = getattr(gradio_app, "cookie_id", "")
        token = (connection.cookies.get(f"access-token-{cookie_id}")
                 or connection.cookies.get(f"access-token-unsecure-{cookie_id}"))
        return getattr(gradio_app, "tokens", {}).get(token) if token else None

    return user
