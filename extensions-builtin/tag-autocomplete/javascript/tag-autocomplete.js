// The built-in tag autocomplete in the four prompt boxes: booru tags from the chosen tag file,
// embeddings, <lora:…>, <hypernet:…> and __wildcard__ names, in a popup under the caret (arrows,
// Tab or Enter to insert, Escape to close). Parsing and searching are in tag-autocomplete-core.js.
(function() {
    "use strict";

    const {parseSteps, searchTags, wordAt, insertionText, applyInsertion, formatCount, searchNames,
        matchesWordStart} = window.hangaTagAutocompleteCore;

    const PROMPTS = ["#txt2img_prompt textarea", "#txt2img_neg_prompt textarea", "#img2img_prompt textarea",
        "#img2img_neg_prompt textarea"].join(", ");
    const NETWORK_LIMIT = 100;
    const REFRESH_MS = 3000;
    const SLICE_MS = 40;
    const api = window.hangaTagAutocomplete = {ready: false, stats: {}};
    const state = {settings: null, db: null, tagFile: null, family: "danbooru", extras: {embeddings: [], loras: [],
        hypernetworks: [], wildcards: []}, popup: null, textarea: null, word: null, results: [], selected: -1,
        inserting: false, refreshedAt: 0};

    async function getJson(url) {
        const response = await fetch(url, {cache: "no-store"});
        if (!response.ok) throw new Error(url + ": HTTP " + response.status);
        return response.json();
    }

    // A turn for the page's other work (a message, not a timer: timers wait in a background tab).
    function breather() {
        if (window.scheduler && typeof window.scheduler.yield === "function") return window.scheduler.yield();
        return new Promise(function(resolve) {
            const channel = new MessageChannel();
            channel.port1.onmessage = resolve;
            channel.port2.postMessage(null);
        });
    }

    // A large tag file takes a few hundred milliseconds to index: in slices of SLICE_MS, so
    // that the page stays responsive meanwhile.
    async function parseInSlices(text) {
        const steps = parseSteps(text);
        let sliceStart = performance.now();
        let step = steps.next();
        while (!step.done) {
            if (performance.now() - sliceStart > SLICE_MS) {
                await breather();
                sliceStart = performance.now();
            }
            step = steps.next();
        }
        return step.value;
    }

    async function loadTags(name) {
        state.tagFile = name;
        if (!name || name === "None") { state.db = null; return; }
        const began = performance.now();
        const response = await fetch("tacapi/v1/tags/" + encodeURIComponent(name));
        if (!response.ok) {
            state.tagFile = null; // try again at the next refresh
            throw new Error("tag file " + name + ": HTTP " + response.status);
        }
        const text = await response.text();
        const fetched = performance.now();
        if (state.tagFile !== name) return; // another file was chosen meanwhile
        const db = await parseInSlices(text);
        if (state.tagFile !== name) return;
        state.db = db;
        state.family = /e621/i.test(name) ? "e621" : "danbooru";
        api.stats = {file: name, rows: state.db.size, fetchMs: fetched - began, parseMs: performance.now() - fetched};
    }

    async function loadExtras() {
        const names = await getJson("tacapi/v1/extra-names");
        state.extras = {
            embeddings: names.embeddings.map(function(name) { return {name: name}; }),
            loras: names.loras,
            hypernetworks: names.hypernetworks.map(function(name) { return {name: name}; }),
            wildcards: names.wildcards.map(function(name) { return {name: name}; }),
        };
    }

    // Settings change on the Settings tab without a page reload: read them again now and then.
    async function refresh() {
        if (performance.now() - state.refreshedAt < REFRESH_MS) return;
        state.refreshedAt = performance.now();
        try {
            state.settings = await getJson("tacapi/v1/settings");
            const jobs = [loadExtras()];
            if (state.settings.tac_tagFile !== state.tagFile) jobs.push(loadTags(state.settings.tac_tagFile));
            await Promise.all(jobs);
        } catch (error) {
            console.warn("Tag autocomplete:", error);
        }
    }

    // The settings as last read, or as the page was built with them (Hanga's `opts`) until then.
    function settings() {
        return state.settings || (typeof opts === "object" && opts) || {};
    }

    function setting(key, fallback) {
        const value = settings()[key];
        return value === undefined ? fallback : value;
    }

    // ---- results ----

    function find(word) {
        const limit = Math.max(1, Number(setting("tac_maxResults", 5)) || 5);
        const query = word.query;
        if (word.kind === "lora" || word.kind === "lyco") {
            return searchNames(state.extras.loras, query, NETWORK_LIMIT).map(function(item) {
                return {kind: word.kind, name: item.name, hint: item.alias || "LoRA"};
            });
        }
        if (word.kind === "hypernet") {
            return searchNames(state.extras.hypernetworks, query, NETWORK_LIMIT).map(function(item) {
                return {kind: "hypernet", name: item.name, hint: "hypernetwork"};
            });
        }
        if (word.kind === "wildcard") {
            return searchNames(state.extras.wildcards, query, NETWORK_LIMIT).map(function(item) {
                return {kind: "wildcard", name: item.name, hint: "wildcard"};
            });
        }
        if (!query) return [];
        const embeddings = state.extras.embeddings.filter(function(item) {
            return matchesWordStart(item.name.toLowerCase(), query);
        }).slice(0, limit).map(function(item) { return {kind: "embedding", name: item.name, hint: "embedding"}; });
        const tags = searchTags(state.db, query, limit, setting("tac_alias.searchByAlias", true) !== false);
        const showCounts = setting("tac_showCounts", true) !== false;
        return embeddings.concat(tags.map(function(found) {
            return {kind: "tag", name: state.db.names[found.index], alias: found.alias, type: state.db.types[found.index],
                hint: showCounts ? formatCount(state.db.counts[found.index]) : ""};
        }));
    }

    // ---- the popup ----

    function popup() {
        if (state.popup && state.popup.isConnected) return state.popup;
        const list = document.createElement("ul");
        list.className = "hanga-tac-popup";
        list.setAttribute("role", "listbox");
        list.addEventListener("mousedown", function(event) {
            event.preventDefault(); // keep the focus (and the caret) in the prompt box
            const item = event.target.closest(".hanga-tac-item");
            if (item) choose(Number(item.dataset.index));
        });
        document.body.appendChild(list); // Gradio marks dark mode on <body>
        state.popup = list;
        return list;
    }

    function close() {
        if (state.popup) {
            state.popup.style.display = "none";
            state.popup.dataset.query = "";
        }
        state.results = [];
        state.selected = -1;
        state.word = null;
    }

    const MIRRORED = ["boxSizing", "width", "borderTopWidth", "borderRightWidth", "borderBottomWidth", "borderLeftWidth",
        "paddingTop", "paddingRight", "paddingBottom", "paddingLeft", "fontStyle", "fontVariant", "fontWeight",
        "fontStretch", "fontSize", "lineHeight", "fontFamily", "textAlign", "textTransform", "textIndent",
        "letterSpacing", "wordSpacing", "tabSize"];

    // Where the caret is, in pixels from the textarea's top left (a hidden copy of its text).
    function caretOffset(textarea, position) {
        const mirror = document.createElement("div");
        const style = getComputedStyle(textarea);
        for (const property of MIRRORED) mirror.style[property] = style[property];
        Object.assign(mirror.style, {position: "absolute", visibility: "hidden", top: "0", left: "-9999px",
            whiteSpace: "pre-wrap", overflowWrap: "break-word", overflow: "hidden"});
        mirror.textContent = textarea.value.slice(0, position);
        const marker = document.createElement("span");
        marker.textContent = "\u200b";
        mirror.appendChild(marker);
        document.body.appendChild(mirror);
        const offset = {top: marker.offsetTop, left: marker.offsetLeft, height: marker.offsetHeight};
        mirror.remove();
        return offset;
    }

    function place(list, textarea, position) {
        const box = textarea.getBoundingClientRect();
        const caret = caretOffset(textarea, position);
        const left = Math.min(Math.max(caret.left - textarea.scrollLeft, 0), Math.max(box.width - 160, 0));
        const top = Math.min(caret.top - textarea.scrollTop + caret.height, box.height) + 2;
        list.style.left = (box.left + window.scrollX + left) + "px";
        list.style.top = (box.top + window.scrollY + top) + "px";
        const overflow = list.getBoundingClientRect().right - document.documentElement.clientWidth;
        if (overflow > 0) list.style.left = Math.max(0, box.left + window.scrollX + left - overflow) + "px";
    }

    function render(textarea, word, results) {
        const list = popup();
        list.dataset.family = state.family;
        list.replaceChildren();
        results.forEach(function(result, index) {
            const item = document.createElement("li");
            item.className = "hanga-tac-item hanga-tac-" + result.kind + (result.kind === "tag" ? " hanga-tac-type-" + result.type : "");
            item.dataset.index = String(index);
            item.setAttribute("role", "option");
            const name = document.createElement("span");
            name.className = "hanga-tac-name";
            name.textContent = result.alias ? result.alias + " \u2192 " + result.name : result.name;
            const hint = document.createElement("span");
            hint.className = "hanga-tac-hint";
            hint.textContent = result.hint || "";
            item.append(name, hint);
            list.appendChild(item);
        });
        list.style.display = "block";
        place(list, textarea, word.start);
        list.dataset.query = word.query;
    }

    function select(index) {
        state.selected = index;
        const items = state.popup ? state.popup.children : [];
        for (let i = 0; i < items.length; i++) {
            items[i].classList.toggle("hanga-tac-selected", i === index);
            items[i].setAttribute("aria-selected", String(i === index));
        }
        if (items[index]) items[index].scrollIntoView({block: "nearest"});
    }

    function update(textarea) {
        if (setting("tac_active", true) === false || textarea.selectionStart !== textarea.selectionEnd) { close(); return; }
        const word = wordAt(textarea.value, textarea.selectionStart);
        const results = word ? find(word) : [];
        if (!results.length) { close(); return; }
        state.textarea = textarea;
        state.word = word;
        state.results = results;
        state.selected = -1;
        render(textarea, word, results);
    }

    function choose(index) {
        const result = state.results[index];
        const textarea = state.textarea;
        const shown = state.word;
        close();
        if (!result || !textarea || !shown) return;
        const word = wordAt(textarea.value, textarea.selectionStart); // the text may have changed since
        if (!word || word.kind !== shown.kind || word.start !== shown.start) return;
        const inserted = insertionText(result, settings());
        const done = applyInsertion(textarea.value, word.start, word.end, inserted, setting("tac_appendComma", true) !== false);
        state.inserting = true;
        try {
            // execCommand keeps the browser's undo history; plain assignment is the fallback.
            textarea.focus();
            textarea.setSelectionRange(word.start, word.end);
            const replaced = document.execCommand && document.execCommand("insertText", false, done.value.slice(word.start, done.caret));
            if (!replaced || textarea.value !== done.value) {
                textarea.value = done.value;
                if (typeof updateInput === "function") updateInput(textarea);
                else textarea.dispatchEvent(new Event("input", {bubbles: true}));
            }
            textarea.setSelectionRange(done.caret, done.caret);
        } finally {
            state.inserting = false;
        }
    }

    // ---- events ----

    function isPrompt(target) {
        return target instanceof HTMLTextAreaElement && target.matches(PROMPTS);
    }

    function onInput(event) {
        if (state.inserting || !event.isTrusted || event.isComposing || !isPrompt(event.target)) return;
        update(event.target);
    }

    function onKeyDown(event) {
        if (!state.results.length || event.target !== state.textarea || event.isComposing) return;
        const count = state.results.length;
        let handled = true;
        if (event.key === "ArrowDown") select((state.selected + 1) % count);
        else if (event.key === "ArrowUp") select(state.selected <= 0 ? count - 1 : state.selected - 1);
        else if (event.key === "Tab" && !event.shiftKey) choose(state.selected >= 0 ? state.selected : 0);
        else if (event.key === "Enter" && state.selected >= 0 && !event.ctrlKey && !event.metaKey) choose(state.selected);
        else if (event.key === "Escape") close();
        else {
            handled = false;
            if (["ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown", "Enter"].includes(event.key)) close();
        }
        if (handled) {
            event.preventDefault();
            event.stopPropagation();
        }
    }

    function start() {
        document.addEventListener("input", onInput, true);
        document.addEventListener("keydown", onKeyDown, true);
        document.addEventListener("focusin", function(event) { if (isPrompt(event.target)) refresh(); }, true);
        document.addEventListener("focusout", function(event) { if (event.target === state.textarea) close(); }, true);
        document.addEventListener("click", function(event) { if (event.target === state.textarea) close(); }, true);
        function follow(event) {
            if (state.word && event.target !== state.popup) place(state.popup, state.textarea, state.word.start);
        }
        window.addEventListener("scroll", follow, true);
        window.addEventListener("resize", follow);
        refresh().then(function() {
            api.ready = Boolean(state.settings);
            const focused = document.activeElement;
            if (api.ready && isPrompt(focused)) update(focused); // typed while the tags were loading
        });
    }

    onUiLoaded(function() {
        // Only with this extension's routes: they are absent when A1111's tag autocomplete runs instead.
        fetch("tacapi/v1/tag-files", {cache: "no-store"}).then(function(response) {
            if (response.ok) start();
        });
    });
})();
