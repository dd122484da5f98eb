"""The largest request body the server reads (the ``limit_max_upload_mb`` setting), for the API and
the page's uploads alike: a declared Content-Length over it is answered 413 before anything is read,
and a body without one is counted as it arrives and cut off at the limit."""

from __future__ import annotations

import json
from typing import Callable

from starlette.exceptions import HTTPException


class BodyLimit:
    """Pure ASGI middleware (so it sees uploads before FastAPI or Gradio buffer them)."""

    def __init__(self, app, limit_bytes: Callable[[], int]):
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_bytes()
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await _answer(send, 400, "the Content-Length header is not a number")
            if int(declared) > limit:
                return await _answer(send, 413, _too_large(int(declared), limit))
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(received, limit))
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except HTTPException as error:
            if started or error.status_code != 413:
                raise
            await _answer(send, 413, error.detail)


def _too_large(size: int, limit: int) -> str:
    return (f"the request body is {size / 2**20:.1f} MB (or more); at most {limit / 2**20:g} MB are accepted "
            "(the limit_max_upload_mb setting)")


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"error": "RequestTooLarge" if status == 413 else "BadRequest", "detail": detail,
                       "body": "", "errors": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
