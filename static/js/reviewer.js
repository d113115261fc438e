// Gatehouse reviewer pages: keyboard, live-queue insertion, resync after reconnect.
// Loaded from our own origin (the CSP forbids inline script and eval). It never builds HTML
// from strings: every fragment it places was rendered and escaped by the server.
(function () {
  "use strict";

  var body = document.body;
  var page = function () { return document.body.getAttribute("data-page"); };

  // --- live connection state and resync ------------------------------------------------
  function setLive(state, text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.setAttribute("data-state", state);
    var label = el.querySelector("[data-live-text]") || el;
    label.textContent = text;
  }
  // Screen readers hear live changes through one polite live region; focus never moves.
  // textContent only: the summary is the server-escaped text of the row, never markup.
  function announce(text) {
    var region = document.getElementById("announcer");
    if (!region) return;
    region.textContent = "";
    window.setTimeout(function () { region.textContent = text; }, 50);
  }
  // How long a web process may keep believing nobody listens (approvals/events.py
  // ABSENCE_MEMORY, 2 s), plus a margin.
  var ABSENCE_MEMORY_MS = 2500;
  body.addEventListener("htmx:wsOpen", function () {
    setLive("open", "live");
    // Changes made before this socket was listening were not pushed to it: after a disconnect,
    // and also on the first connection (the page was rendered a moment ago), fetch the current
    // rows and state now, and once more when every process has learnt that we listen.
    htmx.trigger(document.body, "resync");
    window.setTimeout(function () { htmx.trigger(document.body, "resync"); }, ABSENCE_MEMORY_MS);
  });
  body.addEventListener("htmx:wsClose", function (event) {
    var closed = event.detail && event.detail.event;
    // 4401: the session ended (logged out here or in another tab); the socket stays closed.
    if (closed && closed.code === 4401) {
      setLive("closed", "signed out: reload");
      announce("Live updates stopped: you are signed out. Reload the page.");
    } else setLive("closed", "reconnecting…");
  });
  body.addEventListener("htmx:wsError", function () { setLive("closed", "reconnecting…"); });

  // --- pushed fragments this page has no target for -------------------------------------
  // A push goes to every reviewer page, and htmx reports (console.error) each fragment whose
  // target is not on the page. This extension (hx-ext="ws,live-place") takes those out of the
  // message before htmx swaps it: a new queue or history row is placed where it fits, the rest
  // (a state badge for a proposal not open here, a deletion of a row not shown) is dropped.
  // The fragments are the server's, rendered and escaped; nothing is built from model text.
  htmx.defineExtension("live-place", {
    transformResponse: function (text, xhr) {
      if (xhr) return text; // an ordinary htmx request, not a push
      var template = document.createElement("template");
      template.innerHTML = text;
      Array.prototype.slice.call(template.content.children).forEach(function (fragment) {
        if (!fragment.id || document.getElementById(fragment.id)) return;
        fragment.remove();
        if (fragment.hasAttribute("data-queue-row")) placeQueueRow(fragment);
        else if (fragment.hasAttribute("data-history-row")) placeHistoryRow(fragment);
      });
      return template.innerHTML;
    },
  });

  // --- live insertion of new queue rows --------------------------------------------------
  // A pushed row replaces the row with its id (hx-swap-oob). A row the page does not have yet
  // comes here; we place it if it fits the filters on screen.
  // The value of a filter field on screen ("" when unset; a checkbox counts when checked).
  function fieldValue(formId, name) {
    var form = document.getElementById(formId);
    var field = form && form.elements.namedItem(name);
    if (!field) return "";
    return field.type === "checkbox" ? (field.checked ? field.value : "") : field.value;
  }
  function filterValue(name) { return fieldValue("queue-filters", name); }
  var missed = 0;
  function placeQueueRow(row) {
    var rows = document.getElementById("queue-rows");
    if (!rows) return;
    if (filterValue("type") && filterValue("type") !== row.getAttribute("data-action-type")) return;
    if (filterValue("risk") && filterValue("risk") !== row.getAttribute("data-risk")) return;
    if (filterValue("age")) return; // a new proposal is never "older than" anything yet
    var newestFirst = filterValue("order") === "newest";
    var more = document.getElementById("queue-more");
    if (!newestFirst && more) {
      // Oldest first and more pages below: it belongs at the very end, not on this page.
      missed += 1;
      var notice = document.getElementById("queue-notice");
      if (notice) {
        notice.hidden = false;
        notice.textContent = missed + " new since you loaded this page";
      }
      return;
    }
    var summary = row.querySelector(".col-summary");
    announce("New proposal: " + (summary ? summary.textContent.trim() : ""));
    var placed = document.importNode(row, true);
    if (newestFirst) rows.insertBefore(placed, rows.firstChild); else rows.appendChild(placed);
    var empty = document.getElementById("queue-empty");
    if (empty) empty.remove();
    htmx.process(placed);
    placed.classList.add("arrived");
  }

  // --- live history rows ---------------------------------------------------------------------
  // A decision pushes the proposal's history row: it replaces the row with its id, or, new to
  // this page, goes on top (the page is latest change first) if it fits the filters on screen.
  function historyFilter(name) { return fieldValue("history-filters", name); }
  function placeHistoryRow(row) {
    var rows = document.getElementById("history-rows");
    if (!rows) return;
    // A search or "reviewed by me" cannot be judged from the row: those pages wait for a reload.
    if (historyFilter("q") || historyFilter("mine")) return;
    if (historyFilter("state") && historyFilter("state") !== row.getAttribute("data-state")) return;
    if (historyFilter("type") && historyFilter("type") !== row.getAttribute("data-action-type")) return;
    if (historyFilter("by") && historyFilter("by") !== row.getAttribute("data-decided-by")) return;
    var placed = document.importNode(row, true);
    placed.removeAttribute("hx-swap-oob");
    rows.insertBefore(placed, rows.firstChild);
    var empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    htmx.process(placed);
    placed.classList.add("arrived");
  }

  // --- the claim ----------------------------------------------------------------------------
  // The proposal page claims with one POST as it opens (then renews every minute), and htmx
  // swaps only a 2xx answer. A 503 (PostgreSQL or Redis out of reach for a moment, answered
  // with Retry-After: foundation/unavailable.py) or a request that got no answer left the
  // panel at "Claiming…" for good, and the decision forms then refused for want of a claim.
  // Such a failure asks again, after the server's Retry-After (at most 10 s; else 2 s).
  body.addEventListener("htmx:afterRequest", function (event) {
    var panel = event.detail.elt;
    var xhr = event.detail.xhr;
    if (!panel || panel.id !== "claim-panel" || event.detail.successful) return;
    if (xhr && xhr.status && xhr.status < 500) return; // an answer that will not change
    var after = Number(xhr && xhr.getResponseHeader("Retry-After"));
    var delay = after > 0 ? Math.min(after, 10) : 2;
    window.setTimeout(function () {
      if (document.body.contains(panel)) htmx.trigger(panel, "retry");
    }, delay * 1000);
  });

  // Claims lapse on their own; hide labels whose time has passed until the next push.
  function expireClaims() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-claim-expires]").forEach(function (el) {
      if (Number(el.getAttribute("data-claim-expires")) < now) el.hidden = true;
    });
  }
  setInterval(expireClaims, 15000);

  // --- keyboard ----------------------------------------------------------------------------
  function queueRows() {
    return Array.prototype.slice.call(document.querySelectorAll("#queue-rows tr[data-queue-row]"));
  }
  function selected() { return document.querySelector("#queue-rows tr.selected"); }
  function select(row) {
    var current = selected();
    if (current) current.classList.remove("selected");
    if (!row) return;
    row.classList.add("selected");
    row.setAttribute("aria-selected", "true");
    row.scrollIntoView({ block: "nearest" });
  }
  function move(step) {
    var rows = queueRows();
    if (!rows.length) return;
    var index = rows.indexOf(selected());
    var next = index < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, index + step));
    select(rows[next]);
  }
  function open(row, anchor) {
    if (row) window.location.assign(row.getAttribute("data-href") + (anchor || ""));
  }
  // A selected row that a push removed: select its neighbour.
  body.addEventListener("htmx:oobBeforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    if (!target || !target.classList || !target.classList.contains("selected")) return;
    var rows = queueRows();
    var index = rows.indexOf(target);
    var neighbour = rows[index + 1] || rows[index - 1];
    setTimeout(function () {
      var again = document.getElementById(target.id);
      if (again) { select(again); } else if (neighbour) { select(neighbour); }
    }, 0);
  });

  // A resync re-renders the rows: keep the reviewer's place.
  var keptId = null;
  body.addEventListener("htmx:beforeSwap", function () {
    var current = selected();
    keptId = current ? current.id : null;
  });
  body.addEventListener("htmx:afterSwap", function () {
    if (page() !== "queue") return;
    var again = keptId ? document.getElementById(keptId) : null;
    if (again) { select(again); return; }
    var rows = queueRows();
    if (rows.length && !selected()) select(rows[0]);
  });

  function focusField(id) {
    var field = document.getElementById(id);
    if (!field) return false;
    var details = field.closest("details");
    if (details) details.open = true;
    field.focus();
    if (field.select && field.tagName === "INPUT") field.select();
    return true;
  }
  var shortcutFields = { "#approve": "approve-comment", "#reject": "reject-comment", "#edit": "edit-payload" };

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }
  function showKeys() {
    var dialog = document.getElementById("keys-help");
    if (dialog && !dialog.open) dialog.showModal();
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.metaKey) return;
    var target = event.target;
    if (typing(target)) {
      if (event.key === "Escape") target.blur();
      if (event.key === "Enter" && event.ctrlKey && target.hasAttribute("data-submit-on-ctrl-enter")) {
        event.preventDefault();
        target.form.requestSubmit();
      }
      return;
    }
    if (event.ctrlKey) return;
    var key = event.key;
    // Enter on a focused link, button or disclosure does what that control does.
    if (key === "Enter" && target.closest && target.closest("a, button, summary")) return;
    if (key === "?") { event.preventDefault(); showKeys(); return; }
    if (page() === "queue") {
      if (key === "j") { event.preventDefault(); move(1); }
      else if (key === "k") { event.preventDefault(); move(-1); }
      else if (key === "Enter") { if (selected()) { event.preventDefault(); open(selected()); } }
      else if (key === "a" || key === "r" || key === "e") {
        var anchors = { a: "#approve", r: "#reject", e: "#edit" };
        if (selected()) { event.preventDefault(); open(selected(), anchors[key]); }
      }
    } else if (page() === "proposal") {
      var fields = { a: "approve-comment", r: "reject-comment", e: "edit-payload" };
      if (fields[key] && focusField(fields[key])) event.preventDefault();
      else if (key === "q") { event.preventDefault(); window.location.assign("/"); }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-show-keys]");
    if (button) showKeys();
    var row = event.target.closest && event.target.closest("#queue-rows tr[data-queue-row]");
    if (row && !event.target.closest("a")) select(row);
  });

  function onLoad() {
    if (page() === "queue") {
      var rows = queueRows();
      if (rows.length && !selected()) select(rows[0]);
    }
    if (page() === "proposal") {
      if (shortcutFields[window.location.hash]) focusField(shortcutFields[window.location.hash]);
      var error = document.getElementById("decision-error");
      if (error) error.scrollIntoView({ block: "center" });
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", onLoad);
  else onLoad();
})();
