/*
 * The ticket status page, live. The server renders the page whole (it works without script);
 * this script keeps it current: an EventSource on <page>/events receives the ticket's public
 * view (JSON) after every change, and the page is redrawn from it. A reply is posted as JSON
 * with a client_message_id kept per draft, so a retry after a lost answer is the same reply.
 *
 * Its few words come from the page (data-t-* attributes), and everything shown is set with
 * textContent: no ticket text is ever parsed as HTML.
 */
(function () {
  "use strict";

  var root = document.getElementById("tm-status");
  if (!root) { return; }
  var TEXT_MAX = 5000;
  var lang = root.getAttribute("data-lang") === "en" ? "en" : "zh";
  var base = window.location.pathname.replace(/\/+$/, "");
  var current = null;

  function word(name) { return root.getAttribute("data-t-" + name) || ""; }
  function find(selector) { return root.querySelector(selector); }

  var timeFormat = null;
  try {
    timeFormat = new Intl.DateTimeFormat(lang === "zh" ? "zh-CN" : "en", { dateStyle: "medium", timeStyle: "short" });
  } catch (e) { timeFormat = null; }
  function localTime(iso) {
    var when = new Date(iso);
    if (!timeFormat || isNaN(when.getTime())) { return iso; }
    return timeFormat.format(when);
  }
  function timeElement(iso, className) {
    var el = document.createElement("time");
    el.setAttribute("datetime", iso);
    el.textContent = localTime(iso);
    if (className) { el.className = className; }
    return el;
  }

  function renderEta() {
    var eta = find(".tm-eta");
    if (!eta || !current) { return; }
    eta.textContent = "";
    if (current.status === "resolved" || current.status === "waiting_on_you") { return; }
    if (!current.expected_response_at) { eta.textContent = word("no-eta"); return; }
    if (new Date(current.expected_response_at).getTime() <= Date.now()) { eta.textContent = word("overdue"); return; }
    eta.appendChild(document.createTextNode(word("expected") + ": "));
    eta.appendChild(timeElement(current.expected_response_at, "tm-eta-time"));
  }

  function messageItem(m) {
    var li = document.createElement("li");
    li.className = "tm-message tm-from-" + (m.from === "agent" ? "agent" : m.from === "call" ? "call" : "customer");
    li.setAttribute("data-id", m.id);
    var author = document.createElement("span");
    author.className = "tm-author";
    author.textContent = m.author;
    var text = document.createElement("p");
    text.className = "tm-text";
    text.textContent = m.text;
    li.appendChild(author);
    li.appendChild(document.createTextNode(" "));
    li.appendChild(timeElement(m.at));
    li.appendChild(text);
    return li;
  }

  function render(view) {
    current = view;
    find(".tm-subject").textContent = view.subject;
    find(".tm-channel").textContent = view.channel_label;
    var state = find(".tm-state");
    state.textContent = view.status_label;
    state.setAttribute("data-status", view.status);
    find(".tm-state-hint").textContent = view.status_hint;
    find(".tm-registering").hidden = view.known;
    renderEta();
    var list = find(".tm-messages");
    var items = document.createDocumentFragment();
    view.messages.forEach(function (m) { items.appendChild(messageItem(m)); });
    list.textContent = "";
    list.appendChild(items);
    find(".tm-no-messages").hidden = view.messages.length > 0;
    find(".tm-reply").hidden = !view.can_reply;
    var refusal = find(".tm-reply-refusal");
    refusal.hidden = view.can_reply;
    refusal.textContent = view.reply_refusal || "";
  }

  // ---- live updates -----------------------------------------------------------------------------
  function follow() {
    var live = find(".tm-live");
    var source = new EventSource(base + "/events?lang=" + lang);
    source.addEventListener("view", function (e) {
      try { render(JSON.parse(e.data)); } catch (err) { return; }
      root.setAttribute("data-live", "open");
      live.textContent = word("live");
    });
    source.onerror = function () {
      // EventSource reconnects by itself while the server answers 200; a refused link (4xx) stops it.
      root.setAttribute("data-live", source.readyState === EventSource.CLOSED ? "closed" : "lost");
      live.textContent = word("live-lost");
    };
  }

  // ---- replies ------------------------------------------------------------------------------------
  function newId() {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    return "p" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function setUpReply() {
    var form = find(".tm-reply");
    if (!form) { return; }
    var textarea = form.querySelector("textarea");
    var cmid = form.querySelector("input[name=client_message_id]");
    var button = form.querySelector("button");
    var note = form.querySelector(".tm-reply-note");
    textarea.addEventListener("input", function () { note.textContent = ""; });
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = textarea.value.trim();
      if (!text) { note.textContent = word("empty"); return; }
      if (text.length > TEXT_MAX) { note.textContent = word("too-long"); return; }
      button.disabled = true;
      fetch(base + "/reply?lang=" + lang, {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ client_message_id: cmid.value, text: text })
      }).then(function (resp) {
        if (resp.status === 202) {
          textarea.value = "";
          cmid.value = newId();  // the next draft is a new message
          note.textContent = word("sent");
        } else if (resp.status === 429) {
          note.textContent = word("limited");
        } else if (resp.status === 400) {
          return resp.json().then(function (body) {
            note.textContent = body && body.error && body.error.code === "text_too_long" ? word("too-long") : word("failed");
          });
        } else {
          note.textContent = word("failed");  // the draft and its id stay: sending again is the same reply
        }
      }).catch(function () {
        note.textContent = word("failed");
      }).then(function () {
        button.disabled = false;
      });
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), function (el) {
    el.textContent = localTime(el.getAttribute("datetime"));
  });
  setUpReply();
  follow();
  window.setInterval(renderEta, 30000);  // "expected by" turns into "late" without an event
})();
