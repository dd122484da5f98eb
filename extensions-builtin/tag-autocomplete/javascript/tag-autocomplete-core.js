// The built-in tag autocomplete's pure part: parsing an A1111-TAC tag file (tag,type,count,"aliases"),
// searching it, and what a chosen result inserts. tag-autocomplete.js (loaded after this file, by
// name) is the page part. The CSV is parsed once into arrays sorted by count, with buckets keyed by
// the first two characters of every word start, so a lookup reads a few candidates, not every row.
(function() {
    "use strict";

    const EMPTY = [];
    // Emoticon tags keep their underscores (A1111-TAC's default list).
    const KEEP_UNDERSCORES = new Set(["0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<",
        "3_3", "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"]);

    function isLetter(code) { // ASCII letters, and any non-ASCII character (no word break inside CJK)
        return (code >= 97 && code <= 122) || (code >= 65 && code <= 90) || code > 127;
    }

    // The CSV fields of one line: a quoted field may hold commas and "" quotes; an unquoted 4th
    // field (aliases) takes the rest of the line.
    function splitLine(line) {
        const fields = [];
        let pos = 0;
        const end = line.length;
        while (pos <= end && fields.length < 4) {
            if (line.charCodeAt(pos) === 34) {
                let value = "";
                let from = pos + 1;
                for (;;) {
                    const quote = line.indexOf("\"", from);
                    if (quote < 0) { value += line.slice(from); pos = end + 1; break; }
                    if (line.charCodeAt(quote + 1) === 34) { value += line.slice(from, quote + 1); from = quote + 2; continue; }
                    value += line.slice(from, quote);
                    const comma = line.indexOf(",", quote + 1);
                    pos = comma < 0 ? end + 1 : comma + 1;
                    break;
                }
                fields.push(value);
            } else {
                const comma = fields.length === 3 ? -1 : line.indexOf(",", pos);
                fields.push(line.slice(pos, comma < 0 ? end : comma));
                pos = comma < 0 ? end + 1 : comma + 1;
            }
        }
        return fields;
    }

    // Buckets of ids by the two characters a word starts with: a flat table for ASCII pairs, a Map
    // for the rest. Ids are added in increasing order, so each bucket is in rank order.
    function newBuckets() { return {ascii: new Array(128 * 128), other: new Map()}; }

    function bucket(buckets, text, at, create) {
        const first = text.charCodeAt(at);
        const second = text.charCodeAt(at + 1);
        if (first < 128 && second < 128) {
            let list = buckets.ascii[first * 128 + second];
            if (list === undefined && create) list = buckets.ascii[first * 128 + second] = [];
            return list;
        }
        const key = first * 65536 + second;
        let list = buckets.other.get(key);
        if (list === undefined && create) buckets.other.set(key, list = []);
        return list;
    }

    function addWordStarts(buckets, text, id) {
        for (let p = 0; p + 1 < text.length; p++) {
            if (p > 0 && isLetter(text.charCodeAt(p - 1))) continue;
            const list = bucket(buckets, text, p, true);
            if (list[list.length - 1] !== id) list.push(id);
        }
    }

    // A whole number read without making a string (NaN for anything else).
    function readNumber(text, from, to) {
        let at = from;
        let sign = 1;
        if (text.charCodeAt(at) === 45) { sign = -1; at++; }
        if (at >= to) return NaN;
        let value = 0;
        for (; at < to; at++) {
            const digit = text.charCodeAt(at) - 48;
            if (digit < 0 || digit > 9) return Number(text.slice(from, to).trim());
            value = value * 10 + digit;
        }
        return sign * value;
    }

    function unquote(field) {
        if (field.charCodeAt(0) !== 34) return field;
        return field.slice(1, field.length > 1 && field.endsWith("\"") ? -1 : undefined).replace(/""/g, "\"");
    }

    // The rows' indices, highest count first (file order among equal counts).
    function rankByCount(counts) {
        const size = counts.length;
        let sorted = true;
        let highest = 0;
        for (let i = 0; i < size; i++) {
            if (i > 0 && counts[i] > counts[i - 1]) sorted = false;
            if (counts[i] > highest) highest = counts[i];
        }
        const order = new Int32Array(size);
        for (let i = 0; i < size; i++) order[i] = i;
        if (sorted) return order;
        const shift = 2 ** Math.ceil(Math.log2(size + 1));
        let lowest = 0;
        for (let i = 0; i < size; i++) if (counts[i] < lowest) lowest = counts[i];
        if ((highest - lowest + 1) * shift >= Number.MAX_SAFE_INTEGER) {
            return order.sort(function(a, b) { return counts[b] - counts[a] || a - b; });
        }
        const keys = new Float64Array(size); // (highest - count, index) packed in one number: a native sort
        for (let i = 0; i < size; i++) keys[i] = (highest - counts[i]) * shift + i;
        keys.sort();
        for (let i = 0; i < size; i++) order[i] = keys[i] % shift;
        return order;
    }

    const ROWS_PER_STEP = 4096;

    // An A1111-TAC tag file: rows sorted by count (highest first), so names[i] is the tag ranked i.
    // A generator, so that the page can parse a large file in slices between other work: it yields
    // every ROWS_PER_STEP rows and returns the parsed file.
    function* parseSteps(text) {
        const raw = {names: [], types: [], counts: [], aliases: []};
        const length = text.length;
        let pos = text.charCodeAt(0) === 0xFEFF ? 1 : 0;
        let comma = -1; // the first comma at or after the last search start (length: none)
        let quote = -1;
        function nextComma(from) {
            if (comma < from) { comma = text.indexOf(",", from); if (comma < 0) comma = length; }
            return comma;
        }
        function add(name, type, count, aliases) {
            name = name.trim();
            if (!name) return;
            raw.names.push(name);
            raw.types.push(Number.isFinite(type) ? type : 0);
            raw.counts.push(Number.isFinite(count) ? Math.floor(count) : 0);
            raw.aliases.push(aliases);
        }
        while (pos < length) {
            let end = text.indexOf("\n", pos);
            if (end < 0) end = length;
            const stop = end > pos && text.charCodeAt(end - 1) === 13 ? end - 1 : end;
            if (stop > pos) {
                const c1 = nextComma(pos);
                const c2 = c1 < stop ? nextComma(c1 + 1) : stop;
                const c3 = c2 < stop ? nextComma(c2 + 1) : stop;
                if (quote < pos) { quote = text.indexOf("\"", pos); if (quote < 0) quote = length; }
                if (quote < Math.min(c3, stop)) { // a quoted name, type or count: the careful way
                    const fields = splitLine(text.slice(pos, stop));
                    add(fields[0], parseInt(fields[1], 10), Number(fields[2]), fields[3] || "");
                } else {
                    add(text.slice(pos, Math.min(c1, stop)),
                        c1 < stop ? readNumber(text, c1 + 1, Math.min(c2, stop)) : 0,
                        c2 < stop ? readNumber(text, c2 + 1, Math.min(c3, stop)) : 0,
                        c3 < stop ? unquote(text.slice(c3 + 1, stop)) : "");
                }
            }
            pos = end + 1;
            if (raw.names.length % ROWS_PER_STEP === 0) yield;
        }
        const size = raw.names.length;
        const order = rankByCount(raw.counts);
        const db = {size: size, names: new Array(size), lower: new Array(size), types: new Int16Array(size),
            counts: new Float64Array(size), aliasNames: [], aliasLower: [], aliasOwner: [],
            nameBuckets: newBuckets(), aliasBuckets: newBuckets()};
        yield;
        for (let i = 0; i < size; i++) {
            if (i % ROWS_PER_STEP === ROWS_PER_STEP - 1) yield;
            const row = order[i];
            const name = raw.names[row];
            db.names[i] = name;
            db.lower[i] = name.toLowerCase();
            db.types[i] = raw.types[row];
            db.counts[i] = raw.counts[row];
            addWordStarts(db.nameBuckets, db.lower[i], i);
            if (!raw.aliases[row]) continue;
            for (const alias of raw.aliases[row].split(",")) {
                const trimmed = alias.trim();
                if (!trimmed) continue;
                const id = db.aliasNames.length;
                db.aliasNames.push(trimmed);
                db.aliasLower.push(trimmed.toLowerCase());
                db.aliasOwner.push(i);
                addWordStarts(db.aliasBuckets, db.aliasLower[id], id);
            }
        }
        return db;
    }

    function parseTagCsv(text) {
        const steps = parseSteps(text);
        let step = steps.next();
        while (!step.done) step = steps.next();
        return step.value;
    }

    // Whether query starts a word of text (at its start, or after anything but a letter).
    function matchesWordStart(text, query) {
        let at = text.indexOf(query);
        while (at >= 0) {
            if (at === 0 || !isLetter(text.charCodeAt(at - 1))) return true;
            at = text.indexOf(query, at + 1);
        }
        return false;
    }

    // Up to `limit` tags whose name (or, with useAliases, an alias) has a word starting with query,
    // highest count first: [{index, alias}] (alias: the alias that matched, when the name did not).
    function searchTags(db, query, limit, useAliases) {
        const found = [];
        if (!db || !query) return found;
        if (query.length < 2) {
            for (let i = 0; i < db.size && found.length < limit; i++) {
                if (matchesWordStart(db.lower[i], query)) found.push({index: i, alias: null});
            }
            return found;
        }
        const names = bucket(db.nameBuckets, query, 0, false) || EMPTY;
        const aliases = useAliases ? bucket(db.aliasBuckets, query, 0, false) || EMPTY : EMPTY;
        let a = 0;
        let b = 0;
        while (found.length < limit && (a < names.length || b < aliases.length)) {
            const byName = a < names.length ? names[a] : Infinity;
            const byAlias = b < aliases.length ? db.aliasOwner[aliases[b]] : Infinity;
            const last = found.length ? found[found.length - 1].index : -1;
            if (byName <= byAlias) {
                a++;
                if (matchesWordStart(db.lower[byName], query)) found.push({index: byName, alias: null});
            } else {
                const alias = aliases[b++];
                if (byAlias !== last && matchesWordStart(db.aliasLower[alias], query)) {
                    found.push({index: byAlias, alias: db.aliasNames[alias]});
                }
            }
        }
        return found;
    }

    // What is being typed at the caret: {kind: "tag" | "wildcard" | "lora" | "lyco" | "hypernet",
    // start, end (the span to replace), query} or null when there is nothing to complete.
    function wordAt(text, caret) {
        const before = text.slice(0, caret);
        const network = /<(lora|lyco|hypernet):([^<>:,\n]*)$/i.exec(before);
        if (network) {
            const rest = /^[^<>,\s]*>?/.exec(text.slice(caret))[0];
            return {kind: network[1].toLowerCase(), start: network.index, end: caret + rest.length,
                query: network[2].toLowerCase()};
        }
        let start = caret;
        while (start > 0) {
            const ch = text[start - 1];
            if (ch === "," || ch === "\n" || ch === "|") break;
            if ("()[]{}<>".includes(ch) && text[start - 2] !== "\\") {
                // "cat_(animal": a bracket right after an underscore belongs to the tag's name
                if ("([{".includes(ch) && text[start - 2] === "_") { start--; continue; }
                break;
            }
            start--;
        }
        while (start < caret && /\s/.test(text[start])) start++;
        const word = text.slice(start, caret);
        if (!word || /.:[\d.]*$/.test(word)) return null; // nothing typed, or a weight "(tag:1.2"
        const rest = /^[^\s,()[\]{}<>|]*/.exec(text.slice(caret))[0];
        if (word.startsWith("__")) {
            return {kind: "wildcard", start: start, end: caret + rest.length,
                query: word.slice(2).replace(/_+$/, "").toLowerCase()};
        }
        const query = word.replace(/\\([()[\]{}])/g, "$1").replace(/\s+/g, "_").toLowerCase();
        return {kind: "tag", start: start, end: caret + rest.length, query: query};
    }

    function networkText(prefix, name, multiplier) {
        const number = Number(multiplier);
        return "<" + prefix + ":" + name + ":" + (Number.isFinite(number) ? number : 1) + ">";
    }

    // The text a chosen result puts into the prompt (before the separator).
    function insertionText(result, settings) {
        if (result.kind === "tag") {
            let text = result.name;
            if (settings.tac_replaceUnderscores !== false && !KEEP_UNDERSCORES.has(text)) text = text.replace(/_/g, " ");
            if (settings.tac_escapeParentheses !== false) text = text.replace(/[()[\]]/g, "\\$&");
            return text;
        }
        const multiplier = settings.extra_networks_default_multiplier;
        if (result.kind === "lora" || result.kind === "lyco") return networkText(result.kind, result.name, multiplier);
        if (result.kind === "hypernet") return networkText("hypernet", result.name, multiplier);
        if (result.kind === "wildcard") return "__" + result.name + "__";
        return result.name; // an embedding: its name exactly
    }

    // The prompt with text[start, end) replaced, and a separator after it unless one follows already.
    function applyInsertion(text, start, end, inserted, appendComma) {
        const after = text.slice(end);
        let separator = appendComma ? ", " : " ";
        if (/^\s*,/.test(after) || (!appendComma && /^\s/.test(after))) separator = "";
        return {value: text.slice(0, start) + inserted + separator + after, caret: start + inserted.length + separator.length};
    }

    function formatCount(count) {
        if (!(count > 0)) return "";
        if (count >= 1e6) return (count / 1e6).toFixed(count >= 1e7 ? 0 : 1).replace(/\.0$/, "") + "m";
        if (count >= 1e3) return (count / 1e3).toFixed(count >= 1e4 ? 0 : 1).replace(/\.0$/, "") + "k";
        return String(count);
    }

    // Names (of embeddings, LoRAs …) containing query, those starting with it first.
    function searchNames(items, query, limit) {
        const starts = [];
        const contains = [];
        for (const item of items) {
            const name = item.name.toLowerCase();
            const alias = (item.alias || "").toLowerCase();
            if (name.startsWith(query) || (alias && alias.startsWith(query))) starts.push(item);
            else if (name.includes(query) || (alias && alias.includes(query))) contains.push(item);
            if (starts.length >= limit) break;
        }
        return starts.concat(contains).slice(0, limit);
    }

    const core = {parseTagCsv, parseSteps, searchTags, wordAt, insertionText, applyInsertion, formatCount, searchNames,
        matchesWordStart, splitLine};
    if (typeof module !== "undefined" && module.exports) module.exports = core;
    else window.hangaTagAutocompleteCore = core;
})();
