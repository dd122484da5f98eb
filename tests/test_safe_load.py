"""modules.core.safe_load: genuine files load exactly, hostile files are refused unexecuted,
damaged files fail with a clear error; plus the hash helpers."""

import builtins
import collections
import hashlib
import io
import json
import logging
import os
import pickle
import random
import re
import shlex
import struct
import sys
import tarfile
import time
import types
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch

from modules.core import safe_load
from modules.core.hashing import file_sha256, old_hash, short_hash
from modules.core.safe_load import (
    CorruptFileError,
    UnsafeFileError,
    detect_format,
    load_state_dict,
    load_torch_file,
    unwrap_state_dict,
)


# --------------------------------------------------------------------------- helpers


def random_state_dict(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3, generator=g),
        "model.diffusion_model.input_blocks.0.0.bias": torch.randn(8, generator=g).half(),
        "first_stage_model.decoder.conv_in.weight": torch.randn(4, 4, generator=g).bfloat16(),
        "cond_stage_model.transformer.text_model.embeddings.position_ids":
            torch.arange(77).unsqueeze(0),
    }


def assert_same_tensors(loaded, original):
    assert set(loaded) == set(original)
    for key, value in original.items():
        assert loaded[key].dtype == value.dtype, key
        assert torch.equal(loaded[key], value), key


class SystemPayload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


class ExecPayload:
    """Unpickling this runs Python code that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",)


PAYLOADS = {"system": SystemPayload, "exec": ExecPayload}
# Protocol-2 pickles spell builtins as __builtin__, so accept either name.
FORBIDDEN = {"system": rf"global '{os.system.__module__}\.system' is forbidden",
             "exec": r"global '(__builtin__|builtins)\.exec' is forbidden"}


def hostile_checkpoint(payload, marker):
    return {"state_dict": random_state_dict(), "global_step": 1, "evil": payload(marker)}


def memo_obfuscated_pickle(command):
    """A pickle that calls posix.system(command) with the module and name strings memoised
    early, dropped from the stack, and fetched back for STACK_GLOBAL: no GLOBAL opcode and no
    'posix system' text next to the call."""
    def text(s):
        b = s.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(b)]) + b

    return b"".join([
        pickle.PROTO, b"\x04",
        text(os.system.__module__), pickle.MEMOIZE, pickle.POP,
        text("system"), pickle.MEMOIZE, pickle.POP,
        pickle.EMPTY_DICT, text("state_dict"),
        pickle.BINGET, b"\x00", pickle.BINGET, b"\x01", pickle.STACK_GLOBAL,
        text(command), pickle.TUPLE1, pickle.REDUCE,
        pickle.SETITEM, pickle.STOP,
    ])


def rewrite_zip(src, dst, *, replace=None, extra=None, compression=zipfile.ZIP_STORED):
    """Copy a torch zip checkpoint, swapping member contents and/or adding members."""
    replace, extra = replace or {}, extra or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for info in zin.infolist():
            record = info.filename.partition("/")[2]
            zout.writestr(info.filename, replace.get(record, zin.read(info)))
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


def zip_folder(path):
    with zipfile.ZipFile(path) as z:
        return z.namelist()[0].partition("/")[0]


def assert_refused(path, marker, pattern):
    with pytest.raises(UnsafeFileError) as info:
        load_torch_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "--disable-safe-unpickle" in message and "nothing in it was executed" in message
    assert re.search(pattern, message), message
    with pytest.raises(UnsafeFileError):
        load_state_dict(path)
    assert not marker.exists(), "the payload ran"


# --------------------------------------------------------------------------- genuine files


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_genuine_state_dict_loads_exactly(tmp_path, kind):
    sd = random_state_dict()
    path = tmp_path / f"model.{kind}"
    if kind == "safetensors":
        safetensors.torch.save_file(sd, path)
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=kind == "zip")
    assert_same_tensors(load_state_dict(path), sd)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_format_detected_for_every_pickle_protocol(tmp_path, protocol):
    # Protocols 4+ put a FRAME opcode before torch's magic number.
    sd = random_state_dict()
    path = tmp_path / "model.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    assert detect_format(path) == "torch-legacy"
    assert_same_tensors(load_state_dict(path), sd)


@pytest.mark.parametrize("zip_format", [True, False])
def test_training_checkpoint_is_unwrapped_and_non_tensors_dropped(tmp_path, zip_format):
    sd = collections.OrderedDict(random_state_dict())
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd, "global_step": 5, "epoch": 2}, path,
               _use_new_zipfile_serialization=zip_format)
    raw = load_torch_file(path)
    assert raw["global_step"] == 5 and isinstance(raw["state_dict"], collections.OrderedDict)
    assert_same_tensors(load_state_dict(path), sd)


def test_parameter_numpy_scalar_and_extras_round_trip(tmp_path):
    param = torch.nn.Parameter(torch.randn(3, 2))
    obj = {"weight": param, "scale": np.float64(1.5), "array": np.arange(4, dtype=np.int16),
           "tags": {"a", "b"}, "blob": b"\x00\xffbytes", "dtype": torch.float16,
           "fp8": torch.randn(5).to(torch.float8_e4m3fn)}
    path = tmp_path / "extras.pt"
    torch.save(obj, path)
    raw = load_torch_file(path)
    assert isinstance(raw["weight"], torch.nn.Parameter) and torch.equal(raw["weight"], param)
    assert raw["scale"] == 1.5 and type(raw["scale"]) is np.float64
    np.testing.assert_array_equal(raw["array"], obj["array"])
    assert raw["tags"] == {"a", "b"} and raw["blob"] == obj["blob"]
    assert raw["dtype"] is torch.float16
    assert torch.equal(raw["fp8"].view(torch.uint8), obj["fp8"].view(torch.uint8))
    weights = load_state_dict(path)
    assert set(weights) == {"weight", "fp8"}
    assert type(weights["weight"]) is torch.Tensor and not weights["weight"].requires_grad


def test_embedding_and_hypernetwork_shaped_files(tmp_path):
    emb = {"string_to_token": {"*": 265},
           "string_to_param": torch.nn.ParameterDict({"*": torch.randn(2, 768)}),
           "name": "style", "step": 1000, "sd_checkpoint": "abc", "sd_checkpoint_name": "m"}
    hyper = {768: (collections.OrderedDict(w=torch.randn(2, 2)), {"b": torch.randn(2)}),
             "layer_structure": [1, 2, 1], "activation_func": "relu", "is_layer_norm": False}
    torch.save(emb, tmp_path / "emb.pt")
    torch.save(hyper, tmp_path / "hyper.pt", _use_new_zipfile_serialization=False)
    raw_emb = load_torch_file(tmp_path / "emb.pt")
    assert torch.equal(raw_emb["string_to_param"]["*"], emb["string_to_param"]["*"])
    assert raw_emb["string_to_token"] == {"*": 265}
    raw_hyper = load_torch_file(tmp_path / "hyper.pt")
    assert torch.equal(raw_hyper[768][0]["w"], hyper[768][0]["w"])
    assert raw_hyper["layer_structure"] == [1, 2, 1]


def test_lightning_model_checkpoint_becomes_inert_stand_in(tmp_path, monkeypatch):
    # Old SD .ckpt files pickle pytorch_lightning's ModelCheckpoint; fake the module to save one.
    fake = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": fake.__name__})
    fake.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", fake.__name__):
        monkeypatch.setitem(sys.modules, name, fake)
    callback = ModelCheckpoint()
    callback.monitor = "val/loss"
    sd = random_state_dict()
    torch.save({"state_dict": sd, "callbacks": {ModelCheckpoint: {"best": 1.0}},
                "instance": callback}, tmp_path / "sd14.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", fake.__name__):
        monkeypatch.delitem(sys.modules, name)

    raw = load_torch_file(tmp_path / "sd14.ckpt")
    assert raw["callbacks"] == {safe_load.ModelCheckpointStandIn: {"best": 1.0}}
    assert isinstance(raw["instance"], safe_load.ModelCheckpointStandIn)
    assert_same_tensors(load_state_dict(tmp_path / "sd14.ckpt"), sd)


def test_compressed_zip_loads_correct_values(tmp_path):
    # torch.load(mmap=True) silently returns garbage for deflated members; we must not mmap them.
    sd = random_state_dict()
    torch.save(sd, tmp_path / "orig.pt")
    path = rewrite_zip(tmp_path / "orig.pt", tmp_path / "rezipped.pt",
                       compression=zipfile.ZIP_DEFLATED)
    assert_same_tensors(load_state_dict(path), sd)


def test_pickle_checkpoint_named_safetensors_loads_by_content(tmp_path):
    sd = random_state_dict()
    for zip_format in (True, False):
        path = tmp_path / f"really_a_ckpt_{zip_format}.safetensors"
        torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
        assert_same_tensors(load_state_dict(path), sd)


def test_unwrap_state_dict():
    inner = {"a": torch.ones(1)}
    assert unwrap_state_dict({"state_dict": inner, "global_step": 3}) is inner
    assert unwrap_state_dict(inner) is inner
    tensor_named_state_dict = {"state_dict": torch.ones(1)}
    assert unwrap_state_dict(tensor_named_state_dict) is tensor_named_state_dict
    ema, plain = {"a": torch.zeros(1)}, {"a": torch.ones(1)}
    assert unwrap_state_dict({"params": plain, "params_ema": ema}) is ema  # BasicSR: the EMA weights win
    assert unwrap_state_dict({"params": plain}) is plain


def test_basicsr_upscaler_file_loads_its_weights(tmp_path):
    weights = random_state_dict()
    torch.save({"params_ema": weights, "params": random_state_dict(seed=1)}, tmp_path / "RealESRGAN_x4plus.pth")
    assert_same_tensors(load_state_dict(tmp_path / "RealESRGAN_x4plus.pth"), weights)


# --------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_with_payload_is_refused(tmp_path, payload, zip_format):
    marker = tmp_path / "MARKER"
    path = tmp_path / "model.ckpt"
    torch.save(hostile_checkpoint(PAYLOADS[payload], marker), path,
               _use_new_zipfile_serialization=zip_format)
    assert_refused(path, marker, FORBIDDEN[payload])


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("name", ["x.ckpt", "x.safetensors"])
def test_raw_pickle_is_refused_whatever_its_extension(tmp_path, payload, name):
    marker = tmp_path / "MARKER"
    path = tmp_path / name
    for protocol in (0, 2, 4, 5):
        path.write_bytes(pickle.dumps({"w": PAYLOADS[payload](marker)}, protocol=protocol))
        assert detect_format(path) == "pickle"
        assert_refused(path, marker, FORBIDDEN[payload])


def test_memo_obfuscated_stack_global_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save(random_state_dict(), tmp_path / "model.ckpt")
    evil = memo_obfuscated_pickle(f"touch {shlex.quote(str(marker))}")
    path = rewrite_zip(tmp_path / "model.ckpt", tmp_path / "evil.ckpt",
                       replace={"data.pkl": evil})
    assert_refused(path, marker, FORBIDDEN["system"])


def test_zip_with_extra_member_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save(hostile_checkpoint(SystemPayload, marker), tmp_path / "model.ckpt")
    folder = zip_folder(tmp_path / "model.ckpt")
    path = rewrite_zip(tmp_path / "model.ckpt", tmp_path / "evil.ckpt",
                       extra={f"{folder}/evil.py": b"import os; os.system('true')"})
    # The member check runs before any unpickling, so it is what names the refusal.
    assert_refused(path, marker, rf"unexpected member '{folder}/evil\.py'")


@pytest.mark.parametrize("extra_name", ["{folder}/constants.pkl", "other/data/0", "data.pkl"])
def test_zip_members_torch_save_never_writes_are_refused(tmp_path, extra_name):
    torch.save(random_state_dict(), tmp_path / "model.ckpt")
    folder = zip_folder(tmp_path / "model.ckpt")
    path = rewrite_zip(tmp_path / "model.ckpt", tmp_path / "odd.ckpt",
                       extra={extra_name.format(folder=folder): b"x"})
    with pytest.raises(UnsafeFileError, match="odd.ckpt"):
        load_state_dict(path)


def test_members_only_torch_reader_sees_are_refused(tmp_path, monkeypatch):
    # Simulates a parser differential: Python's zipfile is fooled into missing a TorchScript
    # member that torch's own reader (the one torch.load uses) does see.
    torch.save(random_state_dict(), tmp_path / "model.ckpt")
    folder = zip_folder(tmp_path / "model.ckpt")
    path = rewrite_zip(tmp_path / "model.ckpt", tmp_path / "ts.ckpt",
                       extra={f"{folder}/constants.pkl": b"x"})
    real_infolist = zipfile.ZipFile.infolist
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: [
        i for i in real_infolist(self) if not i.filename.endswith("constants.pkl")])
    with pytest.raises(UnsafeFileError, match="unexpected member 'constants.pkl'"):
        load_state_dict(path)


def test_zip_with_two_data_pkl_is_refused(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save(hostile_checkpoint(SystemPayload, marker), tmp_path / "model.ckpt")
    folder = zip_folder(tmp_path / "model.ckpt")
    evil = memo_obfuscated_pickle(f"touch {shlex.quote(str(marker))}")
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = rewrite_zip(tmp_path / "model.ckpt", tmp_path / "evil.ckpt",
                           extra={f"{folder}/data.pkl": evil})
    assert_refused(path, marker, r"2 data\.pkl members")


def test_codecs_encode_is_limited_to_latin1(tmp_path):
    path = tmp_path / "codec.pt"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(UnsafeFileError, match="encoding 'rot13' is forbidden"):
        load_torch_file(path)


def test_pickle_that_is_also_a_tar_archive_is_refused(tmp_path):
    # torch.load tries real files as old tar checkpoints first and extracts them; a pickle
    # that also parses as tar is a crafted polyglot.
    legacy_head = safe_load._LEGACY_MAGIC
    name = (b"\x80\x02" + legacy_head).decode("latin-1")
    path = tmp_path / "poly.pt"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    assert detect_format(path) == "torch-legacy"
    with pytest.raises(UnsafeFileError, match="tar archive"):
        load_torch_file(path)


def test_payloads_are_live_without_the_restrictions(tmp_path, caplog):
    # Proves the hostile-file tests could fail: unrestricted loading does run the payloads.
    for i, payload in enumerate(PAYLOADS.values()):
        marker = tmp_path / f"MARKER{i}"
        torch.save(hostile_checkpoint(payload, marker), tmp_path / f"evil{i}.ckpt")
        with caplog.at_level(logging.WARNING, logger=safe_load.__name__):
            load_torch_file(tmp_path / f"evil{i}.ckpt", allow_unsafe=True)
        assert marker.exists()
        assert "--disable-safe-unpickle" in caplog.text
    marker = tmp_path / "MARKER_memo"
    pickle.loads(memo_obfuscated_pickle(f"touch {shlex.quote(str(marker))}"))
    assert marker.exists()


def test_allow_unsafe_still_loads_genuine_files(tmp_path):
    sd = random_state_dict()
    torch.save({"state_dict": sd}, tmp_path / "m.safetensors")  # a pickle, despite the name
    assert_same_tensors(load_state_dict(tmp_path / "m.safetensors", allow_unsafe=True), sd)


def test_torch_forced_weights_only_mode_still_safe(tmp_path, monkeypatch):
    # TORCH_FORCE_WEIGHTS_ONLY_LOAD makes torch reject any pickle_module; we fall back to
    # torch's own weights-only unpickler, which must still load genuine files and refuse payloads.
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    sd = random_state_dict()
    torch.save({"state_dict": sd, "global_step": 2}, tmp_path / "ok.ckpt")
    assert_same_tensors(load_state_dict(tmp_path / "ok.ckpt"), sd)
    marker = tmp_path / "MARKER"
    torch.save(hostile_checkpoint(SystemPayload, marker), tmp_path / "evil.ckpt")
    assert_refused(tmp_path / "evil.ckpt", marker, "system")


# --------------------------------------------------------------------------- damaged files


def safetensors_bytes():
    buffer = safetensors.torch.save({"a": torch.randn(4, 4), "b": torch.randn(3)})
    length = struct.unpack("<Q", buffer[:8])[0]
    return buffer, length, json.loads(buffer[8:8 + length])


def with_header(header, data):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def damaged_files():
    buffer, length, header = safetensors_bytes()
    past_end = json.loads(json.dumps(header))
    past_end["a"]["data_offsets"] = [0, 10**6]
    bad_dtype = json.loads(json.dumps(header))
    bad_dtype["a"]["dtype"] = "F99"
    zip_ckpt, legacy_ckpt = io.BytesIO(), io.BytesIO()
    torch.save(random_state_dict(), zip_ckpt)
    torch.save(random_state_dict(), legacy_ckpt, _use_new_zipfile_serialization=False)
    return {
        "random.ckpt": random.Random(0).randbytes(4096),
        "empty.safetensors": b"",
        "truncated_data.safetensors": buffer[:-10],
        "truncated_header.safetensors": buffer[:8 + length // 2],
        "huge_header.safetensors": struct.pack("<Q", 2**40) + buffer[8:],
        "offsets_past_end.safetensors": with_header(past_end, buffer[8 + length:]),
        "bad_dtype.safetensors": with_header(bad_dtype, buffer[8 + length:]),
        "truncated_zip.ckpt": zip_ckpt.getvalue()[: len(zip_ckpt.getvalue()) // 2],
        "truncated_legacy.ckpt": legacy_ckpt.getvalue()[:-100],
        "legacy_magic_then_garbage.pt": (b"\x80\x02" + safe_load._LEGACY_MAGIC
                                         + random.Random(1).randbytes(512)),
        "html.safetensors": b"<!DOCTYPE html><html>Please log in</html>",
        "plain_pickle.ckpt": pickle.dumps({"not": "a checkpoint"}),
    }


@pytest.mark.parametrize("name", list(damaged_files()))
def test_damaged_file_gives_corrupt_error_naming_it(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(damaged_files()[name])
    start = time.monotonic()
    with pytest.raises(CorruptFileError) as info:
        load_state_dict(path)
    assert time.monotonic() - start < 5
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("name, expected", [
    ("empty.safetensors", "empty"),
    ("huge_header.safetensors", "header length (1099511627776 bytes) does not fit"),
    ("truncated_data.safetensors", "truncated"),
    ("offsets_past_end.safetensors", "offsets"),
    ("bad_dtype.safetensors", "dtype"),
    ("random.ckpt", "not a model file"),
    ("html.safetensors", "HTML"),
])
def test_damaged_file_messages_say_what_is_wrong(tmp_path, name, expected):
    path = tmp_path / name
    path.write_bytes(damaged_files()[name])
    with pytest.raises(CorruptFileError, match=re.escape(expected)):
        load_state_dict(path)


def test_missing_file_is_not_reported_as_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_state_dict(tmp_path / "nope.safetensors")


# --------------------------------------------------------------------------- detection


def test_detect_format_by_content_not_extension(tmp_path):
    sd = random_state_dict()
    files = {"safetensors": "model.ckpt", "torch-zip": "model.safetensors",
             "torch-legacy": "model.bin", "pickle": "model.pth", "unknown": "model.pt"}
    safetensors.torch.save_file(sd, tmp_path / files["safetensors"])
    torch.save(sd, tmp_path / files["torch-zip"])
    torch.save(sd, tmp_path / files["torch-legacy"], _use_new_zipfile_serialization=False)
    (tmp_path / files["pickle"]).write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / files["unknown"]).write_bytes(b"hello world, not a model" * 10)
    for kind, name in files.items():
        assert detect_format(tmp_path / name) == kind, name


def test_detect_format_rejects_zip_without_data_pkl(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.ckpt", "w") as z:
        z.writestr("folder/readme.txt", "hi")
    assert detect_format(tmp_path / "a.ckpt") == "unknown"
    with pytest.raises(CorruptFileError, match="zip archive"):
        load_state_dict(tmp_path / "a.ckpt")


# --------------------------------------------------------------------------- hashes


def test_file_sha256_matches_hashlib_for_several_chunk_sizes(tmp_path):
    data = random.Random(2).randbytes(3 * 1024 + 17)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    for chunk in (1, 1000, 1 << 20):
        assert file_sha256(path, chunk=chunk) == expected


def test_short_hash_is_first_ten_hex():
    digest = hashlib.sha256(b"x").hexdigest()
    assert short_hash(digest) == digest[:10] and len(short_hash(digest)) == 10


def test_old_hash_is_64k_window_at_1mib(tmp_path):
    data = random.Random(3).randbytes(int(1.2 * 1024 * 1024))
    path = tmp_path / "big.ckpt"
    path.write_bytes(data)
    expected = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert old_hash(path) == expected
    small = tmp_path / "small.ckpt"
    small.write_bytes(b"tiny")
    assert old_hash(small) == hashlib.sha256(b"").hexdigest()[:8]  # what A1111 computes too
