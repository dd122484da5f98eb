"""The built-in tag autocomplete (``extensions-builtin/tag-autocomplete``): its settings and routes
on a started Hanga, and its parsing, ranking and insertion rules (``tag-autocomplete-core.js``) run
in Chromium on a blank page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save_file

import webui
from modules.core.paths import INSTALL_DIR
from modules.service.extensions import context
from modules.ui.server import build_app
from tests.fixtures.live_server import chromium

CORE = INSTALL_DIR / "extensions-builtin" / "tag-autocomplete" / "javascript" / "tag-autocomplete-core.js"
FLAGS = ["--skip-torch-cuda-test", "--use-cpu", "all"]


def populate(data: Path) -> None:
    """Tag files, a LoRA, a hypernetwork, an embedding and wildcards in a data folder."""
    tags = data / "models" / "tags"
    tags.mkdir(parents=True)
    (tags / "danbooru.csv").write_text('1girl,0,6000000,"1girls,sole_female"\ncat_(animal),0,5000,neko\n')
    (tags / "e621.csv").write_text("solo,0,100,\n")
    (tags / "notes.txt").write_text("not a tag file")
    (tags / "sub").mkdir()
    (tags / "sub" / "hidden.csv").write_text("x,0,1,\n")
    (data / "config.json").write_text(json.dumps({"secret": "do not serve"}))
    tac_tags = data / "extensions" / "a1111-sd-webui-tagcomplete" / "tags"  # only its tags: TAC is not installed
    tac_tags.mkdir(parents=True)
    (tac_tags / "extra-quality-tags.csv").write_text("masterpiece,5,1\n")
    (tac_tags / "danbooru.csv").write_text("shadowed,0,1\n")  # models/tags has this name first
    lora = data / "models" / "Lora"
    lora.mkdir(parents=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, str(lora / "tinylora.safetensors"),
              metadata={"ss_output_name": "Tiny Lora"})
    (data / "models" / "hypernetworks").mkdir(parents=True)
    (data / "models" / "hypernetworks" / "tinyhyper.pt").write_bytes(b"")  # listed by name, never loaded here
    (data / "embeddings").mkdir()
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": torch.zeros(1, 768)}, "name": "mystyle"},
               data / "embeddings" / "mystyle.pt")
    (data / "wildcards" / "animals").mkdir(parents=True)
    (data / "wildcards" / "animals" / "cats.txt").write_text("tabby\nsiamese\n")
    (data / "extensions" / "sd-dynamic-prompts" / "wildcards").mkdir(parents=True)
    (data / "extensions" / "sd-dynamic-prompts" / "wildcards" / "colors.txt").write_text("red\n")


def start(data: Path):
    flags, settings, host = webui.prepare(["--data-dir", str(data), *FLAGS])
    service = webui.create_service(flags, settings, host)
    return service, TestClient(build_app(service, flags))


@pytest.fixture(scope="module")
def hanga(tmp_path_factory):
    data = tmp_path_factory.mktemp("tac") / "data"
    data.mkdir()
    populate(data)
    return (data, *start(data))


def test_settings_are_registered_with_a1111_tac_keys(hanga):
    data, service, _ = hanga
    settings = service.settings
    assert service.extensions.find("tag-autocomplete").status == "ok"
    assert settings.sections["tac"] == "Tag Autocomplete"
    values = settings.data()
    assert values["tac_tagFile"] == "danbooru.csv"  # A1111-TAC's default when it is there
    assert (values["tac_active"], values["tac_maxResults"], values["tac_replaceUnderscores"]) == (True, 5, True)
    assert (values["tac_escapeParentheses"], values["tac_appendComma"], values["tac_alias.searchByAlias"]) == (True, True, True)
    assert values["tac_showCounts"] is True and values["tac_wildcardFolder"] == "wildcards"
    assert all(settings.schema[key].section == "tac" for key in values if key.startswith("tac_"))


def test_tag_files_are_listed_and_served_from_the_tag_folders_only(hanga):
    data, _, client = hanga
    listing = client.get("/tacapi/v1/tag-files").json()
    assert listing == {"files": ["danbooru.csv", "e621.csv", "extra-quality-tags.csv"], "selected": "danbooru.csv"}
    served = client.get("/tacapi/v1/tags/danbooru.csv")
    assert served.status_code == 200 and served.text.startswith("1girl,0,6000000,") and "text/csv" in served.headers["content-type"]
    assert client.get("/tacapi/v1/tags/extra-quality-tags.csv").text == "masterpiece,5,1\n"  # A1111-TAC's tags folder
    refused = ["../config.json", "..%2Fconfig.json", "%2e%2e/config.json", "..%2F..%2Fconfig.json", "notes.txt",
               "sub/hidden.csv", "sub%2Fhidden.csv", f"{(data / 'models' / 'tags' / 'danbooru.csv').as_posix()}",
               "%2Fetc%2Fpasswd", "missing.csv", ".csv"]
    for name in refused:
        response = client.get(f"/tacapi/v1/tags/{name}")
        assert response.status_code == 404, name
        assert "do not serve" not in response.text


def test_extra_names_list_embeddings_loras_hypernetworks_and_wildcards(hanga):
    _, _, client = hanga
    names = client.get("/tacapi/v1/extra-names").json()
    assert names == {"embeddings": ["mystyle"], "loras": [{"name": "tinylora", "alias": "Tiny Lora"}],
                     "hypernetworks": ["tinyhyper"], "wildcards": ["animals/cats", "colors"]}


def test_settings_route_gives_the_current_values(hanga):
    _, service, client = hanga
    service.settings.set("tac_maxResults", 9, persist=False)
    try:
        current = client.get("/tacapi/v1/settings").json()
    finally:
        service.settings.set("tac_maxResults", 5, persist=False)
    assert current["tac_maxResults"] == 9 and current["tac_tagFile"] == "danbooru.csv"
    assert current["extra_networks_default_multiplier"] == 1.0 and current["tac_alias.searchByAlias"] is True
    page = client.get("/").text
    assert "tag-autocomplete-core.js" in page and "tag-autocomplete.js" in page and "tag-autocomplete/style.css" in page


def test_it_stands_aside_when_a1111_tag_autocomplete_is_installed(tmp_path):
    data = tmp_path / "data"
    tac = data / "extensions" / "a1111-sd-webui-tagcomplete"
    (tac / "javascript").mkdir(parents=True)
    (tac / "javascript" / "tagAutocomplete.js").write_text("// stand-in for A1111's script\n")
    (data / "models" / "tags").mkdir(parents=True)
    (data / "models" / "tags" / "danbooru.csv").write_text("1girl,0,1,\n")
    service, client = start(data)
    assert "tac_showCounts" not in service.settings.schema
    assert client.get("/tacapi/v1/tag-files").status_code == 404
    assert client.get("/tacapi/v1/tags/danbooru.csv").status_code == 404


def test_without_tag_files_the_choice_is_none(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    service, client = start(data)
    assert service.settings.get("tac_tagFile") == "None"
    assert (data / "models" / "tags").is_dir()  # made, so the user sees where tag files go
    assert client.get("/tacapi/v1/tag-files").json() == {"files": [], "selected": "None"}
    assert context.current().service is service


# ---- tag-autocomplete-core.js, in Chromium -----------------------------------------------------------


@pytest.fixture(scope="module")
def core():
    with chromium() as browser:
        page = browser.new_page()
        page.set_content("<html><body></body></html>")
        page.add_script_tag(path=str(CORE))
        assert page.evaluate("typeof window.hangaTagAutocompleteCore.parseTagCsv") == "function"
        yield lambda expression, arg=None: page.evaluate(
            "([expression, arg]) => { const core = window.hangaTagAutocompleteCore; return eval(expression); }",
            [expression, arg])
        page.close()


CSV = "\n".join([
    "\ufefflong_hair,0,300,\"longhair,long_hairs\"",
    "1girl,0,6000,\"1girls,sole_female\"\r",
    "\"hello, world\",5,50,\"say \"\"hi\"\"\"",
    "",
    "blue_eyes,0,300,blue_eye",
    "hatsune_miku,4,9000,miku",
    "cat_(animal),0,40,",
    "nocount,3",
    "1boy,0,abc,",
    "^_^,5,10,",
])


def search(core, query, limit=5, aliases=True):
    return core("(() => { const db = core.parseTagCsv(arg[0]); return core.searchTags(db, arg[1], arg[2], arg[3])"
                ".map(r => (r.alias ? r.alias + ' -> ' : '') + db.names[r.index]); })()", [CSV, query, limit, aliases])


def test_csv_rows_are_parsed_and_ranked_by_count(core):
    db = core("(() => { const db = core.parseTagCsv(arg); return {names: db.names, types: Array.from(db.types), "
              "counts: Array.from(db.counts), aliases: db.aliasNames}; })()", CSV)
    assert db["names"] == ["hatsune_miku", "1girl", "long_hair", "blue_eyes", "hello, world", "cat_(animal)", "^_^",
                           "nocount", "1boy"]  # equal counts keep the file's order
    assert db["types"] == [4, 0, 0, 0, 5, 0, 5, 3, 0] and db["counts"][:3] == [9000, 6000, 300]
    assert db["aliases"] == ["miku", "1girls", "sole_female", "longhair", "long_hairs", "blue_eye", 'say "hi"']
    assert core("core.splitLine(arg)", 'a,1,2,x,y') == ["a", "1", "2", "x,y"]  # unquoted aliases take the rest


def test_search_matches_word_starts_by_count_with_aliases(core):
    assert search(core, "1gi") == ["1girl"]
    assert search(core, "girl") == ["1girl"]  # after a digit: a word start, as in A1111-TAC
    assert search(core, "hair") == ["long_hair"] and search(core, "air") == []
    assert search(core, "sole_f") == ["sole_female -> 1girl"]
    assert search(core, "sole_f", aliases=False) == []
    assert search(core, "long") == ["long_hair"]  # its alias "longhair" matches too: listed once, by name
    assert search(core, "mik") == ["hatsune_miku"]  # "miku" starts a word of the name itself
    assert search(core, "cat_(a") == ["cat_(animal)"] and search(core, "(an") == ["cat_(animal)"]
    assert search(core, "b", limit=2) == ["blue_eyes", "1boy"]  # one letter: a scan in rank order
    assert search(core, "zz") == [] and search(core, "") == []
    many = "\n".join(f"t{i:06d}_x,0,{i},al{i}" for i in range(140_000))
    ranked = core("(() => { const db = core.parseTagCsv(arg); return core.searchTags(db, 't13', 3, true)"
                  ".map(r => db.names[r.index]); })()", many)
    assert ranked == ["t139999_x", "t139998_x", "t139997_x"]
    steps, rows = core("(() => { const steps = core.parseSteps(arg); let n = 0; let step = steps.next(); "
                       "while (!step.done) { n++; step = steps.next(); } return [n, step.value.size]; })()", many)
    assert rows == 140_000 and steps >= 60  # the page parses it in slices, giving the page turns in between


def test_the_word_at_the_caret(core):
    def word(text, caret=None):
        return core("core.wordAt(arg[0], arg[1])", [text, len(text) if caret is None else caret])

    assert word("masterpiece, 1gi") == {"kind": "tag", "start": 13, "end": 16, "query": "1gi"}
    assert word("a, long ha") == {"kind": "tag", "start": 3, "end": 10, "query": "long_ha"}  # typed with spaces
    assert word("(blue eye")["query"] == "blue_eye" and word("[red:blu")["query"] == "red:blu"
    assert word("a, cat_(an")["query"] == "cat_(an" and word("cat \\(an")["query"] == "cat_(an"
    assert word("(red eyes:1.2") is None and word("a, ") is None and word("x,\n") is None
    assert word(":3")["query"] == ":3"
    assert word("a, 1gi, b", 6) == {"kind": "tag", "start": 3, "end": 6, "query": "1gi"}
    assert word("a, 1gixx b", 6)["end"] == 8  # the rest of the word is replaced too
    assert word("x <lora:Tin") == {"kind": "lora", "start": 2, "end": 11, "query": "tin"}
    assert word("<lora:ti>, b", 8) == {"kind": "lora", "start": 0, "end": 9, "query": "ti"}
    assert word("<hypernet:")["kind"] == "hypernet" and word("a, __anim")["query"] == "anim"


def test_what_is_inserted(core):
    def text(result, settings=None):
        return core("core.insertionText(arg[0], arg[1])", [result, settings or {}])

    assert text({"kind": "tag", "name": "cat_(animal)"}) == "cat \\(animal\\)"
    assert text({"kind": "tag", "name": "cat_(animal)"}, {"tac_replaceUnderscores": False, "tac_escapeParentheses": False}) \
        == "cat_(animal)"
    assert text({"kind": "tag", "name": "^_^"}) == "^_^" and text({"kind": "tag", "name": "a_[b]"}) == "a \\[b\\]"
    assert text({"kind": "embedding", "name": "my_style(1)"}) == "my_style(1)"
    assert text({"kind": "lora", "name": "tinylora"}, {"extra_networks_default_multiplier": 0.8}) == "<lora:tinylora:0.8>"
    assert text({"kind": "lora", "name": "tinylora"}, {"extra_networks_default_multiplier": 1.0}) == "<lora:tinylora:1>"
    assert text({"kind": "hypernet", "name": "h"}) == "<hypernet:h:1>"
    assert text({"kind": "wildcard", "name": "animals/cats"}) == "__animals/cats__"

    def insert(value, start, end, inserted, comma=True):
        return core("core.applyInsertion(arg[0], arg[1], arg[2], arg[3], arg[4])", [value, start, end, inserted, comma])

    assert insert("1gi", 0, 3, "1girl") == {"value": "1girl, ", "caret": 7}
    assert insert("a, 1gi, b", 3, 6, "1girl") == {"value": "a, 1girl, b", "caret": 8}  # a comma follows already
    assert insert("1gi", 0, 3, "1girl", False) == {"value": "1girl ", "caret": 6}
    assert insert("1gi b", 0, 3, "1girl", False) == {"value": "1girl b", "caret": 5}
    assert [core("core.formatCount(arg)", n) for n in (0, 999, 1500, 12345, 6_000_000, 12_300_000)] == \
        ["", "999", "1.5k", "12k", "6m", "12m"]

