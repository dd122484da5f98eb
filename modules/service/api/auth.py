"""HTTP Basic credentials for ``--api-auth`` / ``--gradio-auth`` (``user:pass[,user2:pass2]``)."""

from __future__ import annotations

import base64
import binascii
import secrets

from fastapi import HTTPException, Request


def parse_credentials(text: str | None) -> list[tuple[str, str]]:
    """``user:pass`` pairs separated by commas or newlines (A1111's format); a bad entry is an error."""
    pairs = []
    for entry in (text or "").replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"credentials must look like user:password; got {entry.split(':')[0]!r}…")
        pairs.append((user, password))
    return pairs


def credentials_match(credentials: list[tuple[str, str]], user: str, password: str) -> bool:
    """Whether ``user:password`` is one of the pairs: each compared in constant time (as bytes, so
    non-ASCII passwords work), every pair looked at."""
    given_user, given_password = user.encode("utf-8"), password.encode("utf-8")
    matched = False
    for known_user, known_password in credentials:
        same_user = secrets.compare_digest(given_user, known_user.encode("utf-8"))
        same_password = secrets.compare_digest(given_password, known_password.encode("utf-8"))
        matched |= same_user & same_password
    return matched


def basic_auth_matches(credentials: list[tuple[str, str]], header: str) -> bool:
    """Whether an ``Authorization: Basic …`` header carries one of the pairs (a malformed one does not)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not credentials:
        return False
    try:
        user, _, password = base64.b64decode(encoded).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return credentials_match(credentials, user, password)


def basic_auth_dependency(credentials: list[tuple[str, str]]):
    """A FastAPI dependency answering 401 + ``WWW-Authenticate: Basic`` unless a pair matches."""

    def check(request: Request) -> None:
        if basic_auth_matches(credentials, request.headers.get("authorization", "")):
            return
        raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})

    return check
