"""Hanga's version, as written into infotexts (``Version: hanga-<version>``)."""

VERSION = "0.1.0"


def infotext_version() -> str:
    # Not an A1111 version number on purpose: A1111's back-compat rules key on its own versions,
    # and an unparseable version leaves Hanga's infotexts untouched when pasted there.
    return f"hanga-{VERSION}"
