// A1111's page helpers, which extensions' scripts call: gradioApp(), onUiLoaded(), onUiUpdate(),
// onAfterUiUpdate(), onUiTabChange(), onOptionsChanged(), onOptionsAvailable(), updateInput(),
// get_uiCurrentTab(), get_uiCurrentTabContent(), uiElementIsVisible(), uiElementInSight(),
// switch_to_txt2img() and friends, `titles` and `opts` (every setting, filled from the page head).
//
// Gradio 6 builds a tab's content the first time it is shown. Extensions expect A1111's page, where
// everything is there from the start (tag autocomplete attaches to the img2img prompt once, at the
// first update). So before anything is announced, the img2img tab, the Settings tab with each of its
// sections and the extensions' tabs are shown once (hidden from view), then txt2img again; only then
// do onUiLoaded and the first onUiUpdate run. Textboxes get A1111's shape on the way
// (`#txt2img_prompt > label > textarea`: Gradio 6 wraps the textarea in a div), and the extensions'
// style.css files move after the page's own CSS, which Gradio adds once the app is built.
/* global opts */
var opts = window.opts || {};
var titles = window.titles || {};
var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];
var hangaPageReady = false;

function gradioApp() {
    const apps = document.getElementsByTagName("gradio-app");
    const root = apps.length ? apps[0] : document;
    if (root !== document && !root.getElementById) {
        // Extensions call gradioApp().getElementById(id), which an element lacks (A1111 adds it too).
        root.getElementById = function(id) { return document.getElementById(id); };
    }
    return root.shadowRoot || root;
}

function executeCallbacks(queue, arg) {
    for (const callback of queue) {
        try {
            callback(arg);
        } catch (error) {
            console.error("error running callback", callback, ":", error);
        }
    }
}

function onUiUpdate(callback) { uiUpdateCallbacks.push(callback); }
function onAfterUiUpdate(callback) { uiAfterUpdateCallbacks.push(callback); }
function onUiLoaded(callback) { uiLoadedCallbacks.push(callback); }
function onUiTabChange(callback) { uiTabChangeCallbacks.push(callback); }
function onOptionsChanged(callback) { optionsChangedCallbacks.push(callback); }
function onOptionsAvailable(callback) {
    if (hangaPageReady) { callback(); return; }
    optionsAvailableCallbacks.push(callback);
}

function get_uiCurrentTab() {
    return gradioApp().querySelector("#tabs > .tab-wrapper button[role=tab].selected, #tabs > .tab-nav > button.selected");
}

function get_uiCurrentTabContent() {
    return gradioApp().querySelector("#tabs > .tabitem[id^=tab_]:not([style*='display: none'])");
}

function uiElementIsVisible(element) {
    if (!element || element === document) return true;
    const style = window.getComputedStyle(element);
    return style.display !== "none" && uiElementIsVisible(element.parentNode === document ? document : element.parentElement || document);
}

function uiElementInSight(element) {
    const rect = element.getBoundingClientRect();
    return rect.bottom > 0 && rect.top < (window.innerHeight || document.documentElement.clientHeight);
}

function updateInput(target) {
    const event = new Event("input", {bubbles: true});
    Object.defineProperty(event, "target", {value: target});
    target.dispatchEvent(event);
}

// A1111's selectCheckpoint(name): load a checkpoint (any of its names) as the quicksettings box does.
function selectCheckpoint(name) {
    const box = gradioApp().querySelector("#hanga_checkpoint_pick textarea, #hanga_checkpoint_pick input");
    const found = gradioApp().querySelector("#change_checkpoint");
    const button = found && found.tagName !== "BUTTON" ? found.querySelector("button") : found;
    if (!box || !button) return;
    box.value = name;
    updateInput(box);
    setTimeout(function() { button.click(); }, 0);
}

// A1111's InputAccordion (modules.ui_components): its checkbox, `#<id>-checkbox`, set from JS. The
// checkbox is inside the accordion, so a closed accordion is opened first (Gradio ignores a click on
// a control it does not show, and builds a closed accordion's content when it first opens).
function inputAccordionChecked(id, checked) {
    const want = Boolean(checked);
    const find = function() {
        const input = gradioApp().querySelector("#" + id + "-checkbox input[type=checkbox]");
        return input && uiElementIsVisible(input) ? input : null;
    };
    // The accordion may not be built yet (a tab opened a moment ago builds its content lazily), and
    // a checkbox clicked just as it mounts can be reset by its component a few ms later, so: open the
    // accordion once, click the checkbox when it shows, and click again (at most every 250 ms) until
    // the value has held for 300 ms.
    let opened = false;
    let clicked = -Infinity;
    let heldSince = null;
    hangaWaitFor(function() {
        const now = performance.now();
        const input = find();
        if (input) {
            if (input.checked === want) {
                if (heldSince === null) heldSince = now;
                return now - heldSince >= 300;
            }
            heldSince = null;
            if (now - clicked > 250) { clicked = now; input.click(); }
            return false;
        }
        const head = gradioApp().querySelector("#" + id + " > .label-wrap, #" + id + " .label-wrap");
        if (head && !opened) {
            opened = true;
            if (!head.classList.contains("open")) head.click();
        }
        return false;
    }, 10000);
}

// -- tabs ---------------------------------------------------------------------------------------
// A Tabs block's buttons: the ones in the bar (ids `<tab elem_id>-button`) and, when the bar is too
// narrow, the ones in its "More tabs" menu.
function hangaTabButtons(tabs) {
    return Array.from(tabs.querySelectorAll(":scope > .tab-wrapper > .tab-container[role=tablist] > button, " +
                                            ":scope > .tab-wrapper .overflow-dropdown > button"));
}

function hangaSelectTab(tabsId, tabId, label) {
    const tabs = gradioApp().querySelector("#" + tabsId);
    if (!tabs) return false;
    const button = tabs.querySelector("#" + CSS.escape(tabId) + "-button") ||
        hangaTabButtons(tabs).find((b) => label !== undefined && b.textContent.trim() === label);
    if (button) button.click();
    return Boolean(button);
}

function switch_to_txt2img() { hangaSelectTab("tabs", "tab_txt2img", "txt2img"); return Array.from(arguments); }
function switch_to_extras() { hangaSelectTab("tabs", "tab_extras", "Extras"); return Array.from(arguments); }
function switch_to_img2img_tab(no) {
    hangaSelectTab("tabs", "tab_img2img", "img2img");
    const modes = gradioApp().querySelector("#mode_img2img");
    const buttons = modes ? hangaTabButtons(modes) : [];
    if (buttons[no]) buttons[no].click();
}
function switch_to_img2img() { switch_to_img2img_tab(0); return Array.from(arguments); }
function switch_to_sketch() { switch_to_img2img_tab(1); return Array.from(arguments); }
function switch_to_inpaint() { switch_to_img2img_tab(2); return Array.from(arguments); }
function switch_to_inpaint_sketch() { switch_to_img2img_tab(3); return Array.from(arguments); }

function hangaWaitFor(test, timeout) {
    return new Promise(function(resolve) {
        const start = performance.now();
        (function poll() {
            const found = test();
            if (found || performance.now() - start > timeout) { resolve(found); return; }
            setTimeout(poll, 25);
        })();
    });
}

async function hangaShowOnce(tabs, button) {
    const panels = () => tabs.querySelectorAll(":scope > .tabitem").length;
    const before = panels();
    const panelId = button.getAttribute("aria-controls");
    if (panelId && document.getElementById(panelId)) return;  // already built
    button.click();
    await hangaWaitFor(() => panels() > before, 3000);
}

// Show each tab of `tabs` once (except `skip(button)`), then select again the one selected before.
async function hangaBuildTabs(tabs, skip, inside) {
    const selected = tabs.querySelector(":scope > .tab-wrapper button[role=tab].selected");
    const count = hangaTabButtons(tabs).length;
    for (let index = 0; index < count; index++) {
        const button = hangaTabButtons(tabs)[index];  // the bar changes as tabs are selected
        if (!button || skip(button)) continue;
        await hangaShowOnce(tabs, button);
        if (inside) await inside(button);
    }
    if (selected) {
        selected.click();
        await hangaWaitFor(() => selected.classList.contains("selected"), 3000);
    }
}

const HANGA_OWN_TABS = new Set(["tab_txt2img", "tab_extras", "tab_pnginfo", "tab_gallery", "tab_modelmerger",
                                "tab_extensions"]);

async function hangaBuildPage() {
    const main = gradioApp().querySelector("#tabs");
    if (!main) return;
    await hangaBuildTabs(main, (button) => HANGA_OWN_TABS.has((button.id || "").replace(/-button$/, "")), async function() {
        const sections = gradioApp().querySelector("#settings_sections");
        if (sections && !sections.dataset.hangaBuilt) {
            sections.dataset.hangaBuilt = "1";
            await hangaBuildTabs(sections, () => false);
        }
    });
}

// -- A1111's DOM -----------------------------------------------------------------------------------
function hangaReshapeTextboxes(root) {
    if (!root.querySelectorAll) return;
    for (const textarea of root.querySelectorAll("label > .input-container > textarea")) {
        const wrapper = textarea.parentElement;
        if (wrapper.children.length === 1) wrapper.parentElement.insertBefore(textarea, wrapper);  // no copy button
    }
}

function hangaApplyTitles(root) {
    if (!root.querySelectorAll || !Object.keys(titles).length) return;
    for (const element of root.querySelectorAll("span, button, select, p")) {
        const text = element.textContent.trim();
        if (!element.title && Object.prototype.hasOwnProperty.call(titles, text)) element.title = titles[text];
    }
}

function hangaReshape(mutations) {
    const roots = new Set();
    for (const mutation of mutations) {
        for (const node of mutation.addedNodes) {
            if (node.nodeType === Node.ELEMENT_NODE) roots.add(node.parentElement || node);
        }
    }
    for (const root of roots) {
        hangaReshapeTextboxes(root);
        hangaApplyTitles(root);
    }
}

// -- options: refreshed after Apply settings (the Settings page calls this once saved) ---------------
async function hangaRefreshOptions() {
    try {
        const response = await fetch("hanga/opts", {cache: "no-store"});
        if (!response.ok) return;
        const fresh = await response.json();
        for (const key of Object.keys(fresh)) opts[key] = fresh[key];
        executeCallbacks(optionsChangedCallbacks);
    } catch (error) {
        console.error("could not re-read the settings", error);
    }
}

// A1111's #sd_checkpoint_hash: the short hash as its text, the full one as its title.
onOptionsChanged(function() {
    const elem = gradioApp().getElementById("sd_checkpoint_hash");
    const sha = opts.sd_checkpoint_hash || "";
    if (elem && (elem.textContent !== sha.substring(0, 10) || elem.title !== sha)) {
        elem.textContent = sha.substring(0, 10);
        elem.title = sha;
    }
});

// -- start -------------------------------------------------------------------------------------------
(function watchThePage() {
    const style = document.createElement("style");
    style.textContent = "html.hanga-building #tabs { visibility: hidden; }";
    document.head.appendChild(style);
    document.documentElement.classList.add("hanga-building");
    let afterTimer = null;
    let currentTab = null;
    let held = [];

    function announce(mutations, reshaped) {
        if (!reshaped) hangaReshape(mutations);
        executeCallbacks(uiUpdateCallbacks, mutations);
        clearTimeout(afterTimer);
        afterTimer = setTimeout(function() { executeCallbacks(uiAfterUpdateCallbacks); }, 200);
        const tab = get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            const first = currentTab === null;
            currentTab = tab;
            if (!first) executeCallbacks(uiTabChangeCallbacks);
        }
    }

    const observer = new MutationObserver(function(mutations) {
        if (hangaPageReady) announce(mutations);
        else held.push(...mutations);
    });
    observer.observe(document.documentElement, {childList: true, subtree: true});

    hangaWaitFor(() => gradioApp().querySelector("#txt2img_prompt textarea"), 120000).then(async function(found) {
        for (const link of document.querySelectorAll("link[data-hanga-style]")) document.head.appendChild(link);
        if (found) await hangaBuildPage();
        hangaReshapeTextboxes(gradioApp());
        hangaApplyTitles(gradioApp());
        document.documentElement.classList.remove("hanga-building");
        hangaPageReady = true;
        executeCallbacks(optionsAvailableCallbacks);
        executeCallbacks(uiLoadedCallbacks);
        const mutations = held;
        held = [];
        announce(mutations, true);
    });
})();

// A1111's localization: text, placeholders and titles found in window.localization are shown
// translated, in what is on the page and in what is added later.
(function translateThePage() {
    const table = window.localization || {};
    if (!Object.keys(table).length) return;
    function translateNode(node) {
        if (node.nodeType === Node.TEXT_NODE) {
            const text = node.textContent.trim();
            if (text && Object.prototype.hasOwnProperty.call(table, text)) {
                node.textContent = node.textContent.replace(text, table[text]);
            }
            return;
        }
        if (node.nodeType !== Node.ELEMENT_NODE) return;
        for (const attribute of ["placeholder", "title"]) {
            const value = node.getAttribute(attribute);
            if (value && Object.prototype.hasOwnProperty.call(table, value)) node.setAttribute(attribute, table[value]);
        }
        for (const child of node.childNodes) translateNode(child);
    }
    onUiUpdate(function(mutations) {
        for (const mutation of mutations || []) {
            for (const node of mutation.addedNodes) translateNode(node);
            if (mutation.type === "characterData") translateNode(mutation.target);
        }
    });
    onUiLoaded(function() { translateNode(gradioApp().body || gradioApp()); });
})();
