// A1111's page helpers, which extensions' scripts call: gradioApp(), onUiLoaded(), onUiUpdate(),
// onAfterUiUpdate(), onUiTabChange(), onOptionsChanged(), onOptionsAvailable(), updateInput(),
// get_uiCurrentTab(), get_uiCurrentTabContent(), uiElementIsVisible(), and `opts` (every setting).
/* global opts */
var opts = window.opts || {};
var uiUpdateCallbacks = [];
var uiAfterUpdateCallbacks = [];
var uiLoadedCallbacks = [];
var uiTabChangeCallbacks = [];
var optionsChangedCallbacks = [];
var optionsAvailableCallbacks = [];
var titles = window.titles || {};

function gradioApp() {
    const apps = document.getElementsByTagName("gradio-app");
    const root = apps.length ? apps[0] : document;
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
    if (Object.keys(opts).length) { callback(); return; }
    optionsAvailableCallbacks.push(callback);
}

function get_uiCurrentTab() {
    return gradioApp().querySelector("#tabs > .tab-nav > button.selected, #tabs button[role=tab][aria-selected=true]");
}

function get_uiCurrentTabContent() {
    return gradioApp().querySelector("#tabs > .tabitem[id^=tab_]:not([style*='display: none'])");
}

function uiElementIsVisible(element) {
    if (!element || element === document) return true;
    const style = window.getComputedStyle(element);
    return style.display !== "none" && uiElementIsVisible(element.parentNode === document ? document : element.parentElement || document);
}

function updateInput(target) {
    const event = new Event("input", {bubbles: true});
    Object.defineProperty(event, "target", {value: target});
    target.dispatchEvent(event);
}

(function watchThePage() {
    let loaded = false;
    let afterTimer = null;
    let currentTab = null;
    const observer = new MutationObserver(function(mutations) {
        if (!loaded && gradioApp().querySelector("#txt2img_prompt")) {
            loaded = true;
            executeCallbacks(uiLoadedCallbacks);
        }
        executeCallbacks(uiUpdateCallbacks, mutations);
        clearTimeout(afterTimer);
        afterTimer = setTimeout(function() { executeCallbacks(uiAfterUpdateCallbacks); }, 200);
        const tab = get_uiCurrentTab();
        if (tab && tab !== currentTab) {
            currentTab = tab;
            executeCallbacks(uiTabChangeCallbacks);
        }
    });
    observer.observe(document.documentElement, {childList: true, subtree: true});
    if (Object.keys(opts).length) {
        document.addEventListener("DOMContentLoaded", function() { executeCallbacks(optionsAvailableCallbacks); });
    }
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
