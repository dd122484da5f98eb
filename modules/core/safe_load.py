"""The one place through which Hanga reads model files.

Users download checkpoints from strangers, and a pickle-based file (.ckpt/.pt/.pth/.bin) can
run arbitrary code while it is unpickled. So, here and only here:

- the format is detected from the file's *content*, never its extension (a pickle renamed to
  ``.safetensors`` is still a pickle);
- pickle-based files are unpickled with an allowlist of globals (A1111's restricted unpickler,
  spec §6.6); anything else stops the load before it is called: nothing in a refused file runs;
- torch zip archives must contain only the members ``torch.save`` writes;
- a refused or damaged file raises ``UnsafeFileError`` / ``CorruptFileError`` whose message
  starts with the file's path.

Restricted unpickling design. ``torch.load(..., weights_only=False, pickle_module=M)`` subclasses
``M.Unpickler`` for the main pickle and calls ``M.load`` for the small legacy-format pickles
(magic number, sys info, storage keys). Giving it a module whose Unpickler's ``find_class`` only
returns allowlisted objects keeps torch in charge of the container and the tensor storages (zip
offsets, legacy layout, map_location) while every global that *any* pickle in the file
names goes through our allowlist. It is one pass over the very bytes torch loads, so there is no
separate pre-scan that a crafted file could make disagree with the real load.
Torch's own wrapper resolves names containing "Storage" (``torch.FloatStorage`` …) to an inert
``StorageType`` before our ``find_class`` is asked, so typed storages need no allowlist entry.

``--disable-safe-unpickle`` maps to ``allow_unsafe=True``: plain ``torch.load`` with a warning.
"""

from __future__ import annotations

import codecs
import collections
import functools
import json
import logging
import os
import pickle
import pickletools
import re
import tarfile
import types
import zipfile

import torch

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

_ESCAPE_HATCH = (
    "If you trust where this file came from, you can skip this check with --disable-safe-unpickle."
)


class UnsafeFileError(ValueError):
    """A model file asks for something a model never needs; it was refused before anything ran."""


class CorruptFileError(ValueError):
    """A file is not a readable model file: truncated, damaged, or not a model at all."""


def _unsafe(path: PathLike, reason: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{os.fspath(path)}: {reason}. Hanga refused to load this file and nothing in it was "
        f"executed; it may be malicious. {_ESCAPE_HATCH}"
    )


def _corrupt(path: PathLike, reason: str) -> CorruptFileError:
    return CorruptFileError(f"{os.fspath(path)}: {reason}")


# --------------------------------------------------------------------------- format detection

_HEAD_BYTES = 1024  # enough for a few opcodes of an old-protocol pickle
_ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy (non-zip) format starts with pickle.dump(MAGIC_NUMBER): PROTO n, an optional
# protocol-4 FRAME, then LONG1 with the 10-byte little-endian magic, then STOP.
_LEGACY_MAGIC = (
    pickle.LONG1 + b"\x0a" + torch.serialization.MAGIC_NUMBER.to_bytes(10, "little") + pickle.STOP
)
_LEGACY_HEAD = re.compile(rb"\x80[\x02-\x05](?:\x95.{8})?" + re.escape(_LEGACY_MAGIC), re.DOTALL)
_PROTO_HEAD = re.compile(rb"\x80[\x02-\x05]")  # every protocol 2+ pickle starts like this
# Protocol 0/1 pickles have no header; they open with a container or a global.
_PICKLE_FIRST_OPS = {"MARK", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "GLOBAL"}


def detect_format(path: PathLike) -> str:
    """``"safetensors"``, ``"torch-zip"``, ``"torch-legacy"``, ``"pickle"`` or ``"unknown"``."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if _safetensors_header_length(head, size) is not None:
        return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return "torch-zip" if _zip_has_data_pkl(path) else "unknown"
    if _LEGACY_HEAD.match(head):
        return "torch-legacy"
    if _PROTO_HEAD.match(head) or _starts_old_protocol_pickle(head):
        return "pickle"
    return "unknown"


def _safetensors_header_length(head: bytes, size: int) -> int | None:
    """The JSON header length if ``head`` starts a plausible safetensors file of ``size`` bytes.

    Checking the length against the file size first means a hostile length (2**40) is rejected
    before anything tries to allocate or read that much.
    """
    if len(head) < 9 or head[8:9] != b"{":
        return None
    length = int.from_bytes(head[:8], "little")
    return length if 2 <= length <= size - 8 else None


def _starts_old_protocol_pickle(head: bytes) -> bool:
    """Whether ``head`` opens with a few well-formed protocol 0/1 pickle opcodes.

    Only decides which error a refused file gets: whatever passes here is still unpickled
    through the allowlist, and whatever fails is refused as "not a model file".
    """
    names = []
    try:
        for opcode, _, _ in pickletools.genops(head):
            names.append(opcode.name)
            if opcode.name == "STOP" or len(names) == 4:
                break
    except ValueError:  # an unknown opcode, or an argument cut off by the end of ``head``
        pass
    return bool(names) and names[0] in _PICKLE_FIRST_OPS and (len(names) == 4 or "STOP" in names)


def _zip_has_data_pkl(path: PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return False
    return any(name.endswith("/data.pkl") for name in names)


def _describe_unknown(path: PathLike) -> str:
    """Why a file is not a model file, in words that point at the usual real-world cause."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
    if size == 0:
        detail = "the file is empty"
    elif head.startswith(_ZIP_MAGIC):
        detail = "a zip archive that is not a readable PyTorch checkpoint (truncated or damaged?)"
    elif head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        detail = (f"looks like safetensors, but its header length ({length} bytes) does not fit "
                  f"in the {size}-byte file; it is truncated or corrupt")
    elif head.startswith(b"version https://git-lfs"):
        detail = "a Git LFS pointer, not the model itself"
    elif head.lstrip()[:1] == b"<":
        detail = "looks like an HTML/XML page (a failed download?)"
    else:
        detail = "neither safetensors nor a PyTorch checkpoint; it may be damaged"
    return f"not a model file: {detail}"


# --------------------------------------------------------------------------- restricted unpickler


class _Refused(Exception):
    """Raised inside unpickling; turned into UnsafeFileError (with the path) by the caller.

    Deliberately not a pickle.UnpicklingError, which torch catches and rewords in places.
    """


class ModelCheckpointStandIn:
    """Inert stand-in for pytorch_lightning's ModelCheckpoint callback.

    Old SD .ckpt files pickle that class (as a dict key, sometimes with state). pytorch_lightning
    is not installed, and importing it just to read weights would be code we don't need to run.
    """

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles store bytes as _codecs.encode(text, "latin1"); that is the only use.
    # Other codec names are looked up (and imported) through the codec registry, so refuse them.
    if encoding not in ("latin1", "latin-1"):
        raise _Refused(f"'_codecs.encode' with encoding {encoding!r} is forbidden")
    return codecs.encode(text, encoding, errors)


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy 2
    except ImportError:
        from numpy.core import multiarray  # numpy 1
    return multiarray


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> the object a pickle gets for it. Everything absent is refused."""
    import numpy

    utils = torch._utils
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): utils._rebuild_tensor_v2,
        # v3 + UntypedStorage: how torch saves fp8/uint16/uint32/uint64 tensors.
        ("torch._utils", "_rebuild_tensor_v3"): utils._rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): utils._rebuild_parameter_with_state,
        ("torch._utils", "_rebuild_device_tensor_from_numpy"):
            utils._rebuild_device_tensor_from_numpy,
        ("torch", "UntypedStorage"): torch.UntypedStorage,
        ("torch.storage", "UntypedStorage"): torch.UntypedStorage,
        ("torch.nn.modules.container", "ParameterDict"): torch.nn.ParameterDict,
        ("numpy", "dtype"): numpy.dtype,
        ("numpy", "ndarray"): numpy.ndarray,
        ("_codecs", "encode"): _latin1_encode,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,  # protocol-2 name; find_class sees it before fix_imports
    }
    multiarray = _numpy_multiarray()
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1 / numpy 2 names
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    allowed.update({("torch", n): v for n, v in vars(torch).items() if isinstance(v, torch.dtype)})
    allowed.update({("numpy.dtypes", n): v for n, v in vars(numpy.dtypes).items()
                    if isinstance(v, type) and issubclass(v, numpy.dtype)})
    for module, name in (("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
                         ("pytorch_lightning.callbacks", "ModelCheckpoint"),
                         ("pytorch_lightning.callbacks", "model_checkpoint")):
        allowed[(module, name)] = ModelCheckpointStandIn
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    # Every opcode that names a global (GLOBAL, STACK_GLOBAL, INST, EXT1/2/4) resolves it
    # through find_class, however the module/name strings were built (memo tricks included).
    def find_class(self, module, name):
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise _Refused(f"global '{module}.{name}' is forbidden") from None


def _restricted_load(file, **kwargs):
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load's pickle_module only needs Unpickler, load and __name__ (read by its dill check).
_RESTRICTED_PICKLE = types.ModuleType("hanga_restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = _restricted_load


# --------------------------------------------------------------------------- container checks

# Exactly what torch.save (1.6 … 2.13) writes under the archive's one top-level folder.
_ZIP_RECORD = re.compile(r"data/\d+|version|byteorder|\.data/serialization_id|data\.pkl"
                         r"|\.format_version|\.storage_alignment")


def _check_zip_container(path: PathLike) -> None:
    """Refuse unexpected archive members.

    The names are checked twice: with Python's zipfile and with torch's own reader, the one
    torch.load uses, so a crafted zip cannot show each parser a different member list (e.g.
    hide a TorchScript ``constants.pkl``, which would divert torch.load to torch.jit.load).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _corrupt(path, f"damaged checkpoint archive ({exc})") from None
    names = [info.filename for info in infos]
    folders = {name.partition("/")[0] for name in names}
    if len(folders) != 1 or not all("/" in name for name in names):
        raise _unsafe(path, "the checkpoint archive has members outside its one top-level folder")
    _check_records(path, [name.partition("/")[2] for name in names], prefix=f"{folders.pop()}/")
    try:
        records = torch._C.PyTorchFileReader(os.fspath(path)).get_all_records()
    except RuntimeError as exc:
        raise _corrupt(path, f"damaged checkpoint archive ({exc})") from None
    _check_records(path, records)


def _check_records(path: PathLike, records: list[str], prefix: str = "") -> None:
    for record in records:
        if not _ZIP_RECORD.fullmatch(record):
            raise _unsafe(path, f"unexpected member '{prefix}{record}' in the checkpoint archive")
    if records.count("data.pkl") != 1:
        raise _unsafe(path, f"the checkpoint archive holds {records.count('data.pkl')} data.pkl "
                            "members instead of one")


def _check_not_tar(path: PathLike) -> None:
    # torch.load first tries any real file as a pre-1.0 *tar* checkpoint and extracts members to
    # a temp dir. A genuine pickle never parses as tar, so one that does is a crafted polyglot.
    if tarfile.is_tarfile(path):
        raise _unsafe(path, "the file is both a pickle and a tar archive")


# --------------------------------------------------------------------------- loading


def load_state_dict(path: PathLike, *, device: str | torch.device = "cpu",
                    allow_unsafe: bool = False) -> dict[str, torch.Tensor]:
    """The str -> Tensor weights of any model file, unwrapped from a ``state_dict`` entry.

    Non-tensor values (``global_step``, callbacks, …) are dropped, and Parameters become plain
    tensors so that later dtype/device conversions never build autograd graphs.
    """
    obj = unwrap_state_dict(load_torch_file(path, device=device, allow_unsafe=allow_unsafe))
    if not isinstance(obj, dict):
        raise _corrupt(path, f"holds a {type(obj).__name__}, not a dict of weights")
    return {key: value.detach() if isinstance(value, torch.nn.Parameter) else value
            for key, value in obj.items()
            if isinstance(key, str) and isinstance(value, torch.Tensor)}


def unwrap_state_dict(obj: object) -> object:
    """Training checkpoints keep the weights under a key: ``"state_dict"`` (Lightning .ckpt),
    ``"params_ema"`` (preferred) or ``"params"`` (BasicSR: Real-ESRGAN, SwinIR upscalers).

    Kept apart from loading because embeddings and hypernetworks need the raw object.
    """
    if isinstance(obj, dict):
        for key in ("state_dict", "params_ema", "params"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def load_torch_file(path: PathLike, *, device: str | torch.device = "cpu",
                    allow_unsafe: bool = False) -> object:
    """The object stored in a model file, read safely.

    For pickle-based files that is whatever was ``torch.save``d (embeddings and hypernetworks
    are dicts with non-tensor entries); for a safetensors file it is its str -> Tensor dict, so
    callers that accept both kinds need no branch of their own.
    """
    kind = detect_format(path)
    if kind == "safetensors":
        return _load_safetensors(path, device)
    if kind == "unknown":
        raise _corrupt(path, _describe_unknown(path))
    if allow_unsafe:
        log.warning("%s: --disable-safe-unpickle is set, so this file is unpickled without "
                    "restrictions; any code inside it runs now, with your rights.", path)
        return _guarded_torch_load(path, device, weights_only=False)
    if kind == "torch-zip":
        _check_zip_container(path)
    else:
        _check_not_tar(path)
    if _torch_forces_weights_only():
        return _guarded_torch_load(path, device, weights_only=True)
    return _guarded_torch_load(path, device, weights_only=False, pickle_module=_RESTRICTED_PICKLE)


def _torch_forces_weights_only() -> bool:
    # TORCH_FORCE_WEIGHTS_ONLY_LOAD overrides even an explicit weights_only=False, and torch then
    # rejects any pickle_module. Torch's own weights-only unpickler is also an allowlist, so use it.
    return os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true")


def _guarded_torch_load(path: PathLike, device, **kwargs) -> object:
    """torch.load with refusals and parse failures turned into our two error types."""
    try:
        return _torch_load(path, device, **kwargs)
    except _Refused as refused:
        raise _unsafe(path, str(refused)) from None
    except pickle.UnpicklingError as exc:
        if kwargs.get("weights_only"):  # torch's weights-only unpickler refused something
            lines = str(exc).splitlines()  # a boilerplate paragraph, then the actual reason
            reason = next((line for line in lines if "GLOBAL" in line), lines[0]).rstrip(".")
            raise _unsafe(path, f"torch's weights-only loader refused it: {reason}") from None
        raise _corrupt(path, f"damaged pickle data ({exc})") from None
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as exc:  # torch reports damage as RuntimeError, EOFError, KeyError, …
        raise _corrupt(path, f"cannot be read as a PyTorch checkpoint "
                             f"({type(exc).__name__}: {exc})") from exc


def _torch_load(path: PathLike, device, **kwargs) -> object:
    # Always an open file, never a path: torch 2.13 hands any *path* ending in ".safetensors"
    # straight to safetensors whatever the content, and detection by content must stay in charge.
    # No mmap: loaded weights must not stay backed by a file the user may overwrite (a checkpoint
    # merged onto its own name would crash the process with SIGBUS), and torch's mmap reads
    # garbage from deflated archive members.
    with open(path, "rb") as f:
        return torch.load(f, map_location=device, mmap=False, **kwargs)


# safetensors' messages, reworded for people who just downloaded a file.
_SAFETENSORS_HINTS = (
    ("incomplete metadata", "the tensor data runs past the end of the file (truncated download?)"),
    ("header too large", "its header is larger than safetensors allows"),
    ("header too small", "its header is too short"),
    ("unknown variant", "its header names an unknown tensor dtype"),
    ("invalid json", "its header is not valid JSON"),
    ("offset", "tensor offsets or shapes in its header do not match the data"),
)


def _load_safetensors(path: PathLike, device) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(os.fspath(path), device=str(device))
    except SafetensorError as exc:
        message = str(exc)
        hint = next((h for key, h in _SAFETENSORS_HINTS if key in message.lower()), "damaged")
        raise _corrupt(path, f"not a valid safetensors file: {hint} [{message}]") from None


def safetensors_metadata(path: PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file's header ({} for anything else)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        length = _safetensors_header_length(head, size)
        if length is None:
            return {}
        f.seek(8)
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python's stack
            return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
