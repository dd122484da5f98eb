"""Where infotext lives inside image files (a1111-compat.md §3.1, §12).

PNG: a ``parameters`` text chunk. JPEG/WebP: EXIF UserComment. GIF: the ``comment`` field.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from PIL import Image
from PIL.PngImagePlugin import PngInfo

PARAMETERS_KEY = "parameters"
EXIF_IFD_POINTER = 0x8769
EXIF_USER_COMMENT = 0x9286
_LONG, _UNDEFINED = 4, 7  # TIFF field types

# EXIF UserComment starts with an 8-byte character-code prefix (EXIF 2.3, §4.6.5).
_USER_COMMENT_CODECS = {
    b"UNICODE\0": "utf-16-be",  # what A1111 writes (piexif's "unicode" is big-endian)
    b"ASCII\0\0\0": "ascii",
    b"JIS\0\0\0\0\0": "shift_jis",
}
_UTF16_BOMS = {b"\xff\xfe": "utf-16-le", b"\xfe\xff": "utf-16-be"}


def pnginfo_for(parameters: str | None, extra: Mapping[str, str] | None = None) -> PngInfo:
    """Text chunks for a PNG: ``parameters`` first, then ``extra`` (other keys of the source image).

    ``parameters`` goes first so that it is the first chunk after IHDR, where third-party readers
    look (§12.1). No EXIF is added: an EXIF ``Model`` tag in a PNG crashes a popular reader.
    """
    info = PngInfo()
    if parameters is not None:
        _add_text(info, PARAMETERS_KEY, parameters)
    for key, value in (extra or {}).items():
        if key != PARAMETERS_KEY:
            _add_text(info, key, str(value))
    return info


def user_comment_exif(text: str) -> bytes:
    """An EXIF block (``Exif\\0\\0`` + big-endian TIFF) whose only entry is the Exif IFD's
    UserComment = ``b"UNICODE\\0"`` + UTF-16BE text, as A1111 writes with piexif (§3.1, §12.4).

    Built by hand because Pillow's ``Image.Exif`` types a bytes value of a tag it has no table entry
    for (UserComment in the Exif IFD) as BYTE; EXIF says UNDEFINED, and piexif-based readers such
    as A1111's then get a tuple of numbers instead of bytes.
    """
    comment = b"UNICODE\0" + text.encode("utf-16-be")
    exif_ifd_at = 8 + 2 + 12 + 4  # after the TIFF header and IFD0 (count, one entry, next-IFD offset)
    comment_at = exif_ifd_at + 2 + 12 + 4
    ifd0 = struct.pack(">HHHII", 1, EXIF_IFD_POINTER, _LONG, 1, exif_ifd_at) + struct.pack(">I", 0)
    exif_ifd = struct.pack(">HHHII", 1, EXIF_USER_COMMENT, _UNDEFINED, len(comment), comment_at) + struct.pack(">I", 0)
    return b"Exif\0\0" + b"MM\0\x2a" + struct.pack(">I", 8) + ifd0 + exif_ifd + comment


def _add_text(info: PngInfo, key: str, value: str) -> None:
    # tEXt is Latin-1 only; readers that predate iTXt still get every Latin-1 text (§3.1).
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        info.add_itxt(key, value, zip=False)
    else:
        info.add_text(key, value, zip=False)


def read_infotext(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """The infotext of an opened image and its other text fields (A1111's ``read_info_from_image``).

    An EXIF UserComment, when the image has one, overrides a ``parameters`` chunk, as in A1111
    (JPEG and WebP keep the infotext there). A GIF ``comment`` is used only when nothing else was
    found; A1111 also lets it replace a PNG's ``parameters``, which no saver produces.
    """
    info = image.info or {}
    parameters = info.get(PARAMETERS_KEY)
    parameters = str(parameters) if isinstance(parameters, str) else None
    user_comment = _exif_user_comment(info.get("exif"))
    if user_comment:
        parameters = user_comment
    elif parameters is None and "comment" in info:
        parameters = _decode_text(info["comment"])
    texts = {key: str(value) for key, value in info.items()
             if isinstance(key, str) and isinstance(value, str) and key != PARAMETERS_KEY}
    return parameters, texts


def _exif_user_comment(exif_bytes: object) -> str | None:
    if not isinstance(exif_bytes, bytes):
        return None
    try:
        exif = Image.Exif()
        exif.load(exif_bytes)
        comment = exif.get_ifd(EXIF_IFD_POINTER).get(EXIF_USER_COMMENT)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop reading the image
        return None
    return decode_user_comment(comment) if comment else None


def decode_user_comment(comment: bytes | str) -> str:
    """EXIF UserComment bytes → text, by prefix; unknown prefixes are read as UTF-8 (as A1111).

    ``UNICODE`` text is big-endian UTF-16 (what A1111 writes) unless a byte-order mark says
    otherwise: some tools write it little-endian with a BOM.
    """
    if isinstance(comment, str):
        return comment
    comment = bytes(comment)
    codec = _USER_COMMENT_CODECS.get(comment[:8])
    if codec is None:
        return comment.decode("utf-8", errors="ignore")
    body = comment[8:]
    if codec == "utf-16-be" and body[:2] in _UTF16_BOMS:
        codec, body = _UTF16_BOMS[body[:2]], body[2:]
    return body.decode(codec, errors="replace")


def _decode_text(value: object) -> str:
    return value.decode("utf-8", errors="ignore") if isinstance(value, bytes) else str(value)
