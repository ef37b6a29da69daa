/*
 * ticketmesh chat widget. One tag embeds it on any page:
 *
 *   <script src="https://chat.example.com/widget.js" data-lang="zh" async></script>
 *
 * Attributes: data-lang = zh | en (default: the browser's language), data-mode = float (a
 * button in the corner that opens a panel; default) | page (the panel fills data-target, as on
 * the standalone chat page), data-target = id of the element to fill in page mode.
 *
 * Delivery: every message gets a client_message_id and waits in an outbox (localStorage) until
 * the server's ack, which only comes after the broker confirmed it. After a reconnect the
 * widget says hello again, shows the server's history, and resends what is still unacked with
 * the same ids; the server recognises them, so nothing arrives twice.
 *
 * Everything shown is set with textContent: no user or agent text is ever parsed as HTML.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || window.__ticketmeshChat) { return; }

  var serverOrigin = new URL(script.src, window.location.href).origin;
  var wsUrl = serverOrigin.replace(/^http/, "ws") + "/ws";
  var mode = script.getAttribute("data-mode") === "page" ? "page" : "float";
  var lang = pickLanguage(script.getAttribute("data-lang"));
  var TEXT_MAX = 5000;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var KEYS = { visitor: "tm_chat_visitor_id", profile: "tm_chat_profile", outbox: "tm_chat_outbox" };

  var STRINGS = {
    zh: {
      open: "在线咨询", title: "在线客服", close: "关闭", intro: "请留下您的称呼，我们马上为您服务。",
      name: "您的称呼", email: "邮箱（选填）", start: "开始咨询", placeholder: "输入消息，按 Enter 发送",
      send: "发送", agent: "客服", you: "我", connecting: "正在连接…", online: "已连接",
      reconnecting: "连接已断开，正在重新连接…", pending: "发送中", acked: "已送达", failed: "发送失败",
      tooLong: "消息不能超过 5000 个字符。", nameRequired: "请填写您的称呼。", badEmail: "邮箱格式不正确。",
      newMessage: "新消息"
    },
    en: {
      open: "Chat with us", title: "Customer support", close: "Close", intro: "Tell us your name and we will be right with you.",
      name: "Your name", email: "Email (optional)", start: "Start chat", placeholder: "Type a message, Enter to send",
      send: "Send", agent: "Support", you: "You", connecting: "Connecting…", online: "Connected",
      reconnecting: "Connection lost, reconnecting…", pending: "Sending", acked: "Delivered", failed: "Not sent",
      tooLong: "A message can be at most 5000 characters.", nameRequired: "Please tell us your name.",
      badEmail: "That email address does not look right.", newMessage: "New message"
    }
  };
  var t = STRINGS[lang];

  // ---- storage (may be unavailable: private windows, blocked cookies) --------------------------
  var memory = {};
  function load(key, fallback) {
    var raw = null;
    try { raw = window.localStorage.getItem(key); } catch (e) { raw = memory[key] || null; }
    if (raw === null) { return fallback; }
    try { return JSON.parse(raw); } catch (e) { return fallback; }
  }
  function save(key, value) {
    var raw = JSON.stringify(value);
    try { window.localStorage.setItem(key, raw); } catch (e) { memory[key] = raw; }
  }

  function pickLanguage(requested) {
    if (requested === "zh" || requested === "en") { return requested; }
    var langs = navigator.languages || [navigator.language || "zh"];
    for (var i = 0; i < langs.length; i++) {
      var primary = String(langs[i]).toLowerCase().split("-")[0];
      if (primary === "zh" || primary === "en") { return primary; }
    }
    return "zh";
  }

  function randomId(prefix) {
    var bytes = new Uint8Array(16);
    window.crypto.getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) { hex += ("0" + bytes[i].toString(16)).slice(-2); }
    return prefix + hex;
  }

  // ---- state -----------------------------------------------------------------------------------
  var visitorId = load(KEYS.visitor, null);
  if (typeof visitorId !== "string" || !/^[A-Za-z0-9_-]{16,64}$/.test(visitorId)) {
    visitorId = randomId("v_");
    save(KEYS.visitor, visitorId);
  }
  var profile = load(KEYS.profile, null);
  var outbox = load(KEYS.outbox, []);  // [{client_message_id, text}], oldest first
  if (!Array.isArray(outbox)) { outbox = []; }
  var socket = null;
  var welcomed = false;
  var attempt = 0;
  var reconnectTimer = null;
  var resendTimer = null;
  var bubbles = {};     // client_message_id -> element
  var replies = {};     // reply_id -> true
  var unread = 0;

  // ---- DOM helpers -----------------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  var CSS = [
    ".tm-chat-page{margin:0;font-family:system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;background:#f4f5f7;color:#1f2328}",
    ".tm-page-header{display:flex;justify-content:space-between;align-items:center;max-width:720px;margin:0 auto;padding:12px 16px}",
    ".tm-page-header h1{font-size:20px;margin:0}",
    ".tm-launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;border:0;border-radius:24px;padding:12px 18px;background:#1f6feb;color:#fff;font:15px system-ui,sans-serif;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25)}",
    ".tm-badge{display:inline-block;min-width:18px;margin-left:6px;padding:0 5px;border-radius:9px;background:#d1242f;font-size:12px;line-height:18px}",
    ".tm-panel{display:flex;flex-direction:column;background:#fff;color:#1f2328;font:14px/1.45 system-ui,-apple-system,'PingFang SC','Microsoft YaHei',sans-serif;box-sizing:border-box}",
    ".tm-panel *{box-sizing:border-box}",
    ".tm-float{position:fixed;right:20px;bottom:80px;width:360px;max-width:calc(100vw - 40px);height:520px;max-height:calc(100vh - 110px);z-index:2147483000;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden}",
    ".tm-embedded{max-width:720px;height:calc(100vh - 90px);min-height:400px;margin:0 auto;border:1px solid #d0d7de;border-radius:10px;overflow:hidden}",
    ".tm-hidden{display:none!important}",
    ".tm-head{display:flex;justify-content:space-between;align-items:center;padding:10px 14px;background:#1f6feb;color:#fff}",
    ".tm-head button{border:0;background:transparent;color:#fff;font-size:18px;cursor:pointer}",
    ".tm-status{padding:4px 14px;font-size:12px;color:#57606a;background:#f6f8fa;border-bottom:1px solid #eaeef2}",
    ".tm-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}",
    ".tm-msg{max-width:80%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}",
    ".tm-msg-customer{align-self:flex-end;background:#ddf4ff}",
    ".tm-msg-agent{align-self:flex-start;background:#f6f8fa;border:1px solid #eaeef2}",
    ".tm-author{display:block;font-size:12px;color:#57606a;margin-bottom:2px}",
    ".tm-tick{display:block;text-align:right;font-size:11px;color:#57606a}",
    ".tm-msg[data-state=acked] .tm-tick{color:#1a7f37}",
    ".tm-msg[data-state=failed] .tm-tick{color:#d1242f}",
    ".tm-compose{display:flex;gap:8px;padding:10px;border-top:1px solid #eaeef2}",
    ".tm-compose textarea{flex:1;resize:none;height:56px;padding:6px 8px;border:1px solid #d0d7de;border-radius:6px;font:inherit}",
    ".tm-compose button,.tm-prechat button{border:0;border-radius:6px;padding:0 14px;background:#1f6feb;color:#fff;font:inherit;cursor:pointer}",
    ".tm-prechat{display:flex;flex-direction:column;gap:10px;padding:16px}",
    ".tm-prechat input{padding:8px;border:1px solid #d0d7de;border-radius:6px;font:inherit}",
    ".tm-prechat button{padding:9px 14px}",
    ".tm-notice{color:#d1242f;font-size:12px;min-height:1em;padding:0 12px}"
  ].join("\n");

  var style = el("style");
  style.textContent = CSS;
  (document.head || document.documentElement).appendChild(style);

  // ---- build the panel -------------------------------------------------------------------------
  var panel = el("section", "tm-panel " + (mode === "page" ? "tm-embedded" : "tm-float tm-hidden"));
  panel.setAttribute("aria-label", t.title);
  panel.setAttribute("lang", lang === "zh" ? "zh-CN" : "en");

  var head = el("div", "tm-head");
  head.appendChild(el("strong", "", t.title));
  if (mode === "float") {
    var closeButton = el("button", "tm-close", "×");
    closeButton.type = "button";
    closeButton.setAttribute("aria-label", t.close);
    closeButton.addEventListener("click", function () { togglePanel(false); });
    head.appendChild(closeButton);
  }
  panel.appendChild(head);

  var statusLine = el("div", "tm-status", t.connecting);
  statusLine.setAttribute("role", "status");
  panel.appendChild(statusLine);

  var prechat = el("form", "tm-prechat");
  prechat.appendChild(el("p", "", t.intro));
  var nameInput = el("input", "tm-name");
  nameInput.name = "name"; nameInput.placeholder = t.name; nameInput.maxLength = 200; nameInput.autocomplete = "name";
  var emailInput = el("input", "tm-email");
  emailInput.name = "email"; emailInput.type = "email"; emailInput.placeholder = t.email; emailInput.maxLength = 320;
  emailInput.autocomplete = "email";
  var startButton = el("button", "tm-start", t.start);
  startButton.type = "submit";
  var prechatNotice = el("div", "tm-notice");
  prechat.appendChild(nameInput);
  prechat.appendChild(emailInput);
  prechat.appendChild(startButton);
  prechat.appendChild(prechatNotice);
  panel.appendChild(prechat);

  var logBox = el("div", "tm-log");
  logBox.setAttribute("aria-live", "polite");
  panel.appendChild(logBox);
  var notice = el("div", "tm-notice");
  panel.appendChild(notice);

  var compose = el("form", "tm-compose");
  var input = el("textarea", "tm-input");
  input.placeholder = t.placeholder; input.maxLength = TEXT_MAX; input.rows = 2;
  input.setAttribute("aria-label", t.placeholder);
  var sendButton = el("button", "tm-send", t.send);
  sendButton.type = "submit";
  compose.appendChild(input);
  compose.appendChild(sendButton);
  panel.appendChild(compose);

  var launcher = null;
  var badge = null;
  if (mode === "float") {
    launcher = el("button", "tm-launcher", t.open);
    launcher.type = "button";
    badge = el("span", "tm-badge tm-hidden", "0");
    badge.setAttribute("aria-label", t.newMessage);
    launcher.appendChild(badge);
    launcher.addEventListener("click", function () { togglePanel(panel.classList.contains("tm-hidden")); });
  }

  function mount() {
    var target = mode === "page" && script.getAttribute("data-target")
      ? document.getElementById(script.getAttribute("data-target")) : null;
    (target || document.body).appendChild(panel);
    if (launcher) { document.body.appendChild(launcher); }
    showStage();
    if (profile) { connect(); }
  }

  function togglePanel(open) {
    panel.classList.toggle("tm-hidden", !open);
    if (open) {
      unread = 0;
      if (badge) { badge.classList.add("tm-hidden"); }
      (profile ? input : nameInput).focus();
    }
  }

  function showStage() {
    var chatting = !!profile;
    prechat.classList.toggle("tm-hidden", chatting);
    logBox.classList.toggle("tm-hidden", !chatting);
    compose.classList.toggle("tm-hidden", !chatting);
    statusLine.classList.toggle("tm-hidden", !chatting);
  }

  // ---- rendering -------------------------------------------------------------------------------
  function scrollDown() { logBox.scrollTop = logBox.scrollHeight; }

  function renderCustomer(cmid, text, state) {
    var bubble = bubbles[cmid];
    if (!bubble) {
      bubble = el("div", "tm-msg tm-msg-customer");
      bubble.setAttribute("data-cmid", cmid);
      bubble.appendChild(el("span", "tm-text", text));
      bubble.appendChild(el("span", "tm-tick"));
      bubbles[cmid] = bubble;
      logBox.appendChild(bubble);
      scrollDown();
    }
    setState(cmid, state);
  }

  function setState(cmid, state) {
    var bubble = bubbles[cmid];
    if (!bubble) { return; }
    bubble.setAttribute("data-state", state);
    var tick = bubble.querySelector(".tm-tick");
    tick.textContent = state === "acked" ? "✓" : state === "failed" ? "!" : "…";
    tick.title = t[state] || "";
  }

  function renderAgent(entry) {
    if (replies[entry.reply_id]) { return; }
    replies[entry.reply_id] = true;
    var bubble = el("div", "tm-msg tm-msg-agent");
    bubble.setAttribute("data-reply-id", String(entry.reply_id));
    bubble.appendChild(el("span", "tm-author", entry.agent_name || t.agent));
    bubble.appendChild(el("span", "tm-text", String(entry.text)));
    logBox.appendChild(bubble);
    scrollDown();
    if (mode === "float" && panel.classList.contains("tm-hidden") && badge) {
      unread += 1;
      badge.textContent = String(unread);
      badge.classList.remove("tm-hidden");
    }
  }

  function renderHistory(history) {
    while (logBox.firstChild) { logBox.removeChild(logBox.firstChild); }
    bubbles = {};
    replies = {};
    for (var i = 0; i < history.length; i++) {
      var entry = history[i];
      if (entry.from === "agent") { renderAgent(entry); }
      else { renderCustomer(String(entry.client_message_id), String(entry.text), "acked"); }
    }
  }

  // ---- outbox ----------------------------------------------------------------------------------
  function persistOutbox() { save(KEYS.outbox, outbox); }

  function dropFromOutbox(cmid) {
    outbox = outbox.filter(function (item) { return item.client_message_id !== cmid; });
    persistOutbox();
  }

  function transmit(item) {
    if (!welcomed || !socket || socket.readyState !== WebSocket.OPEN) { return; }
    socket.send(JSON.stringify({ type: "message", client_message_id: item.client_message_id, text: item.text }));
  }

  function flushOutbox() {
    for (var i = 0; i < outbox.length; i++) { transmit(outbox[i]); }
  }

  function sendMessage() {
    var text = input.value.replace(/^\s+|\s+$/g, "");
    notice.textContent = "";
    if (!text) { return; }
    if (text.length > TEXT_MAX) { notice.textContent = t.tooLong; return; }
    var item = { client_message_id: randomId("m_"), text: text };
    outbox.push(item);
    persistOutbox();
    renderCustomer(item.client_message_id, text, "pending");
    input.value = "";
    transmit(item);
  }

  // ---- connection ------------------------------------------------------------------------------
  function setStatus(text) { statusLine.textContent = text; }

  function connect() {
    if (socket && (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING)) { return; }
    clearTimeout(reconnectTimer);
    setStatus(attempt ? t.reconnecting : t.connecting);
    var ws = new WebSocket(wsUrl);
    socket = ws;
    ws.onopen = function () {
      ws.send(JSON.stringify({
        type: "hello", visitor_id: visitorId, name: profile ? profile.name : "",
        email: profile && profile.email ? profile.email : null, language: lang
      }));
    };
    ws.onmessage = function (event) {
      var frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame && typeof frame === "object") { onFrame(frame); }
    };
    ws.onclose = function () {
      if (socket !== ws) { return; }
      welcomed = false;
      socket = null;
      setStatus(t.reconnecting);
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    var base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    attempt += 1;
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, base / 2 + Math.random() * base / 2);
  }

  function scheduleResend() {
    // The server could not confirm (broker away): try the outbox again, backing off.
    if (resendTimer) { return; }
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    attempt += 1;
    resendTimer = setTimeout(function () { resendTimer = null; flushOutbox(); }, delay);
  }

  function onFrame(frame) {
    if (frame.type === "welcome") {
      welcomed = true;
      attempt = 0;
      if (typeof frame.visitor_id === "string" && frame.visitor_id !== visitorId) {
        visitorId = frame.visitor_id;
        save(KEYS.visitor, visitorId);
      }
      setStatus(t.online);
      var history = Array.isArray(frame.history) ? frame.history : [];
      renderHistory(history);
      var delivered = {};
      for (var i = 0; i < history.length; i++) { delivered[history[i].client_message_id] = true; }
      outbox = outbox.filter(function (item) { return !delivered[item.client_message_id]; });
      persistOutbox();
      for (var j = 0; j < outbox.length; j++) { renderCustomer(outbox[j].client_message_id, outbox[j].text, "pending"); }
      flushOutbox();
    } else if (frame.type === "ack") {
      dropFromOutbox(frame.client_message_id);
      setState(frame.client_message_id, "acked");
    } else if (frame.type === "agent_message") {
      renderAgent(frame);
    } else if (frame.type === "error") {
      if (frame.code === "unavailable") { scheduleResend(); return; }
      if (frame.client_message_id) {
        // The server refused this message for good (too long, empty...): stop resending it.
        dropFromOutbox(frame.client_message_id);
        setState(frame.client_message_id, "failed");
      }
      notice.textContent = frame.message ? String(frame.message) : "";
    }
  }

  // ---- events ----------------------------------------------------------------------------------
  prechat.addEventListener("submit", function (event) {
    event.preventDefault();
    var name = nameInput.value.replace(/^\s+|\s+$/g, "");
    var email = emailInput.value.replace(/^\s+|\s+$/g, "");
    if (!name) { prechatNotice.textContent = t.nameRequired; return; }
    if (email && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) { prechatNotice.textContent = t.badEmail; return; }
    profile = { name: name, email: email || null };
    save(KEYS.profile, profile);
    showStage();
    input.focus();
    connect();
  });

  compose.addEventListener("submit", function (event) {
    event.preventDefault();
    sendMessage();
  });

  input.addEventListener("keydown", function (event) {
    // Enter sends; Shift+Enter is a new line; Enter that confirms an IME (pinyin) choice is not a send.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      sendMessage();
    }
  });

  window.__ticketmeshChat = {
    reconnect: function () { if (socket) { socket.close(); } },
    visitorId: function () { return visitorId; }
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mount);
  } else {
    mount();
  }
})();
