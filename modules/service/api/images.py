"""Images in API bodies: raw base64 or a ``data:`` URI, and http(s) URLs only when the
``api_enable_requests`` setting allows them — never to a loopback, private, link-local or reserved
address while ``api_forbid_local_requests`` is on (the default)."""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass

from PIL import Image

from modules.core.generation.request import InvalidRequest
from modules.core.image_input import DEFAULT_MAX_PIXELS, ImageTooLarge, UnreadableImage, read_image
from modules.core.png_meta import pnginfo_for

MAX_DOWNLOAD = 64 * 1024 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    enabled: bool = False
    forbid_local: bool = True
    timeout: float = 30.0
    max_pixels: int = DEFAULT_MAX_PIXELS  # also for base64 images: the decompression-bomb limit


def decode_image(data: str, field: str = "image", urls: UrlPolicy = UrlPolicy()) -> Image.Image:
    """An image from a request field; anything unreadable is a clear 422 naming the field."""
    if not isinstance(data, str) or not data.strip():
        raise InvalidRequest(field, "needs a base64 image")
    data = data.strip()
    if data.lower().startswith(("http://", "https://")):
        raw = fetch(data, field, urls)
    else:
        if data.startswith("data:"):
            data = data.split(",", 1)[-1]
        try:
            raw = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as error:
            raise InvalidRequest(field, f"not valid base64 ({error})") from None
    try:
        return read_image(raw, urls.max_pixels, "the image")
    except ImageTooLarge as error:
        raise InvalidRequest(field, str(error)) from None
    except UnreadableImage as error:
        raise InvalidRequest(field, f"not a readable base64 image ({error.reason})") from None


def encode_png(image: Image.Image, infotext: str | None, extra: dict[str, str] | None = None) -> str:
    """Raw base64 (no ``data:`` prefix) of a PNG carrying the infotext chunk."""
    buffer = io.BytesIO()
    info = pnginfo_for(infotext) if infotext else None
    if extra:
        from PIL.PngImagePlugin import PngInfo

        info = info or PngInfo()
        for key, value in extra.items():
            info.add_text(key, value)
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def check_url(url: str, field: str, policy: UrlPolicy) -> None:
    """Refuse a URL the settings do not allow, before any connection is made."""
    if not policy.enabled:
        raise InvalidRequest(field, "image URLs are not fetched; send base64 data, or turn on the "
                                    "api_enable_requests setting")
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise InvalidRequest(field, f"the URL {url!r} has no host")
    if not policy.forbid_local:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as error:
        raise InvalidRequest(field, f"cannot resolve {host!r} ({error})") from None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast:
            raise InvalidRequest(field, f"{host!r} is a local or private address ({ip}); such URLs are forbidden "
                                        "(setting api_forbid_local_requests)")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is checked like the first URL (no bouncing to a private address)."""

    def __init__(self, field: str, policy: UrlPolicy):
        self.field, self.policy = field, policy

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, self.field, self.policy)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch(url: str, field: str, policy: UrlPolicy) -> bytes:
    check_url(url, field, policy)
    request = urllib.request.Request(url, headers={"User-Agent": "Hanga"})
    opener = urllib.request.build_opener(_CheckedRedirects(field, policy))
    try:
        with opener.open(request, timeout=policy.timeout) as response:
            data = response.read(MAX_DOWNLOAD + 1)
    except OSError as error:
        raise InvalidRequest(field, f"could not fetch {url!r} ({error})") from None
    if len(data) > MAX_DOWNLOAD:
        raise InvalidRequest(field, f"the image at {url!r} is larger than {MAX_DOWNLOAD // 2**20} MiB")
    return data
