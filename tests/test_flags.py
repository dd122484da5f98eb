"""A1111 v1.10.1 command-line compatibility: every flag is accepted, none crashes start-up."""

import argparse
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modules.core import flags

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "spec" / "a1111-compat.md"
# The §2.2 flag list extracted from the spec, kept with the tests so that a clean clone without
# ../shared still checks every flag; test_vendored_flag_list_matches_the_spec keeps it honest.
VENDORED = ROOT / "tests" / "data" / "a1111_flags.txt"


def spec_flags() -> list[str]:
    """Option strings of A1111's flag table (the vendored copy of the spec's list)."""
    return VENDORED.read_text(encoding="utf-8").split()


def flags_in_spec_text() -> list[str]:
    """Option strings named in the first column of the spec's §2.2 flag table."""
    text = SPEC.read_text(encoding="utf-8")
    section = text[text.index("### 2.2"):text.index("### 2.3")]
    options = []
    for row in section.splitlines():
        cells = row.split("|")
        if len(cells) < 3 or set(cells[1].strip()) <= {"-"}:
            continue  # not a row, or the header separator
        options += re.findall(r"`(--?[a-z][a-z0-9-]*)", cells[1])
    return options


def plausible_args(parser: argparse.ArgumentParser, option: str) -> list[str]:
    action = parser._option_string_actions[option]
    if action.nargs == 0:
        return [option]
    if action.choices:
        value = next(c for c in action.choices if c != action.default)
    elif action.type is int:
        value = "5"
    elif action.dest == "ngrok_options":
        value = '{"authtoken_from_env": true}'
    else:
        value = "/tmp/some value"
    return [option, value]


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_spec_table_is_found():
    options = spec_flags()
    assert len(options) > 100
    assert {"-f", "--precision", "--lora-dir", "--swinir-models-path"} <= set(options)


@pytest.mark.skipif(not SPEC.exists(), reason="the shared spec is not beside this checkout")
def test_vendored_flag_list_matches_the_spec():
    assert spec_flags() == flags_in_spec_text()


@pytest.mark.parametrize("option", spec_flags())
def test_every_spec_flag_is_accepted(option, caplog):
    parser = flags.build_parser()
    args = plausible_args(parser, option)
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(args, parser)
    assert not any("unknown" in m for m in warnings_of(caplog))
    dest = parser._option_string_actions[option].dest
    assert getattr(ns, dest) != parser.get_default(dest)


def test_parser_declares_nothing_beyond_the_spec():
    parser = flags.build_parser()
    declared = {o for a in parser._actions for o in a.option_strings} - {"-h", "--help"}
    assert declared == set(spec_flags()) | flags.HANGA_ONLY


def test_implemented_and_nop_are_declared_and_disjoint():
    dests = {a.dest for a in flags.build_parser()._actions}
    assert flags.IMPLEMENTED <= dests
    assert flags.NOP <= dests
    assert not flags.IMPLEMENTED & flags.NOP


def test_defaults_match_a1111(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags([])
    assert warnings_of(caplog) == []
    assert ns.port is None
    assert ns.precision == "autocast"
    assert ns.use_cpu == [] and ns.styles_file == [] and ns.gradio_allowed_path == []
    assert ns.ckpt is None and ns.ckpt_dir is None
    assert ns.data_dir is None and ns.models_dir is None
    assert ns.timeout_keep_alive == 30
    assert ns.filenames_max_length == 128
    assert ns.sub_quad_q_chunk_size == 1024 and ns.sub_quad_kv_chunk_size is None
    assert ns.max_batch_count == 16
    assert ns.disable_tls_verify is True  # A1111's store_false: the flag turns verification off
    assert ns.f is False and ns.api is False


def test_values_are_typed():
    ns = flags.parse_flags(["--port", "7000", "--use-cpu", "sd", "interrogate",
                            "--styles-file", "a.csv", "--styles-file", "b/*.csv",
                            "--ngrok-options", '{"region": "eu"}', "--precision", "full"])
    assert ns.port == 7000
    assert ns.use_cpu == ["sd", "interrogate"]
    assert ns.styles_file == ["a.csv", "b/*.csv"]
    assert ns.ngrok_options == {"region": "eu"}
    assert ns.precision == "full"


def test_realistic_user_line_warns_once_about_unsupported_flags(caplog):
    line = ("--xformers --medvram --api --listen --port 7000 --no-half-vae --opt-sdp-attention "
            "--enable-insecure-extension-access --theme dark")
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(line.split())
    assert warnings_of(caplog) == ["not supported yet: --theme"]
    assert ns.api and ns.listen and ns.no_half_vae and ns.port == 7000 and ns.medvram
    assert ns.xformers and ns.theme == "dark"  # accepted and kept, just not acted on yet


def test_nop_flags_are_silent(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        flags.parse_flags(["--deepdanbooru", "--max-batch-count", "4", "--gradio-queue",
                           "--ngrok-region", "eu", "--gradio-img2img-tool", "color-sketch"])
    assert warnings_of(caplog) == []


def test_unknown_flags_are_warned_not_fatal(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(["--api", "--controlnet-dir", "/cn models", "--no-such-flag"])
    assert ns.api
    assert warnings_of(caplog) == [
        "ignoring unknown command-line arguments: --controlnet-dir '/cn models' --no-such-flag"
    ]


def test_abbreviations_are_not_expanded(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(["--no-half-v"])
    assert ns.no_half_vae is False
    assert "unknown" in warnings_of(caplog)[0]


def test_extensions_can_add_flags_before_parsing(caplog):
    parser = flags.build_parser()
    parser.add_argument("--controlnet-dir", type=str, default=None)
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(["--controlnet-dir", "/cn"], parser)
    assert ns.controlnet_dir == "/cn"
    assert warnings_of(caplog) == []  # an extension's flag is the extension's to act on


def test_test_server_expands_like_a1111(caplog):
    with caplog.at_level(logging.WARNING, logger="hanga"):
        ns = flags.parse_flags(["--test-server"])
    assert ns.api and ns.skip_torch_cuda_test and ns.disable_nan_check
    assert ns.ckpt == ""
    assert warnings_of(caplog) == []  # the expansion is not something the user set
    assert flags.parse_flags(["--test-server", "--ckpt", "/m.ckpt"]).ckpt == "/m.ckpt"


def test_commandline_args_are_appended_and_shell_split():
    env = {"COMMANDLINE_ARGS": '--ckpt "/path with spaces/m.safetensors" --api'}
    argv = flags.flags_from_environment(["--listen"], env)
    assert argv == ["--listen", "--ckpt", "/path with spaces/m.safetensors", "--api"]
    ns = flags.parse_flags(argv)
    assert ns.ckpt == "/path with spaces/m.safetensors"
    assert ns.listen and ns.api
    assert flags.flags_from_environment(["--api"], {}) == ["--api"]


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = flags.parse_flags(["--ckpt-dir", "models/extra"])
    assert ns.ckpt_dir == str(tmp_path / "models" / "extra")


def test_server_name_rules():
    def name(*argv):
        return flags.server_name(flags.parse_flags(argv))

    assert name() == "127.0.0.1"
    assert name("--listen") == "0.0.0.0"
    assert name("--server-name", "box.lan") == "box.lan"
    assert name("--listen", "--server-name", "box.lan") == "box.lan"  # A1111: the name wins


def test_server_port_rules():
    def port(*argv):
        return flags.server_port(flags.parse_flags(argv))

    assert port() == 7860
    assert port("--nowebui") == 7861
    assert port("--port", "9000") == 9000
    assert port("--nowebui", "--port", "9000") == 9000


def test_is_non_local():
    def non_local(*argv):
        return flags.is_non_local(flags.parse_flags(argv))

    assert not non_local()
    assert not non_local("--api", "--port", "9000")
    for argv in (["--share"], ["--listen"], ["--ngrok", "token"], ["--server-name", "x"]):
        assert non_local(*argv)


@pytest.mark.parametrize("argv", [["--precision", "fp8"], ["--port", "seventy"],
                                  ["--ngrok-options", "{not json"]])
def test_bad_values_of_known_flags_exit(argv):
    with pytest.raises(SystemExit) as exc:
        flags.parse_flags(argv)
    assert exc.value.code == 2


def test_unsupported_flags_list():
    unsupported = flags.unsupported_flags()
    assert unsupported == sorted(unsupported)
    assert {"--xformers-flash-attention", "--styles-file"} <= set(unsupported)
    assert not {"--medvram", "--medvram-sdxl", "--lowvram", "--xformers", "--opt-sdp-attention"} & set(unsupported)
    assert "--lora-dir" not in unsupported and "--vae-path" not in unsupported
    assert "--port" not in unsupported and "--deepdanbooru" not in unsupported
    declared = {a.dest for a in flags.build_parser()._actions} - {"help"}
    assert len(unsupported) == len(declared - flags.IMPLEMENTED - flags.NOP)


def test_markdown_entry_point():
    out = subprocess.run([sys.executable, "-m", "modules.core.flags", "--markdown"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(flags.unsupported_flags())
    xformers = "- `--xformers-flash-attention`: xformers with flash attention (SD2)"
    assert xformers in lines
