/*
 * ticketmesh chat widget. One tag embeds it on any page:
 *
 *   <script src="https://chat.example.com/widget.js" data-lang="zh" async></script>
 *
 * Attributes: data-lang = zh | en (default: the browser's language), data-mode = float (a
 * button in the corner that opens a panel; default) | page (the panel fills data-target, as on
 * the standalone chat page), data-target = id of the element to fill in page mode.
 * Logged-in users of the site: data-site, data-user-id and data-user-hash (hex HMAC-SHA256 of
 * the user id with the site's secret, computed by the site's server), optionally data-name and
 * data-email to fill the form. Such a visitor is the same visitor on every device.
 *
 * Delivery: every message gets a client_message_id and waits in an outbox (localStorage) until
 * the server's ack, which only comes after the broker confirmed it. Every entry of the
 * conversation carries its position (seq); the widget keeps the position up to which it holds
 * everything (lastSeq), confirms it to the server (received), and after a reconnect says hello
 * with it and is sent only what it missed. A position it skipped makes it ask (sync). Unacked
 * messages are resent with the same ids; the server recognises them, so nothing arrives twice.
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
  var verifiedUser = script.getAttribute("data-user-id") && script.getAttribute("data-user-hash") ? {
    site: script.getAttribute("data-site") || "", user_id: script.getAttribute("data-user-id"),
    user_hash: script.getAttribute("data-user-hash")
  } : null;
  var TEXT_MAX = 5000;
  var FILE_MAX = 10 * 1024 * 1024;
  var BACKOFF_MIN_MS = 500;
  var BACKOFF_MAX_MS = 30000;
  var TYPING_EVERY_MS = 3000;
  var AGENT_TYPING_SHOWN_MS = 6000;
  var KEYS = { session: "tm_chat_visitor_id", profile: "tm_chat_profile", outbox: "tm_chat_outbox" };

  var STRINGS = {
    zh: {
      open: "在线咨询", title: "在线客服", close: "关闭", intro: "请留下您的称呼，我们马上为您服务。",
      name: "您的称呼", email: "邮箱（选填）", phone: "电话（选填）", start: "开始咨询",
      placeholder: "输入消息，按 Enter 发送", send: "发送", attach: "发送图片或文件", file: "文件", agent: "客服",
      connecting: "正在连接…", online: "已连接", reconnecting: "连接已断开，正在重新连接…",
      pending: "发送中", acked: "已送达", failed: "发送失败",
      tooLong: "消息不能超过 5000 个字符。", nameRequired: "请填写您的称呼。", badEmail: "邮箱格式不正确。",
      newMessage: "新消息", typing: "{name}正在输入…", someone: "客服",
      queue: "您前面还有 {ahead} 位客户，预计等待约 {minutes} 分钟。", queueNext: "马上就轮到您了，客服即将接入。",
      pendingWait: "我们会在 {minutes} 分钟内回复您。", assigned: "{name}已接入，正在查看您的问题。",
      atRisk: "当前咨询较多，请稍候。",
      noAgents: "现在没有客服在线。请留言，我们会通过邮件回复您。",
      noAgentsNoEmail: "现在没有客服在线。请留言并留下邮箱，我们会通过邮件回复您。",
      leaveEmail: "您的邮箱", leaveEmailSend: "留下邮箱", emailSaved: "好的，我们会回复到您的邮箱。",
      transcript: "发送聊天记录到邮箱", transcriptTo: "接收聊天记录的邮箱", transcriptSend: "发送",
      transcriptQueued: "聊天记录将发送到 {to}。", closed: "本次咨询已结束。如有新问题，请直接发送消息。",
      fileTooLarge: "文件不能超过 {mb} MB。", uploading: "正在上传 {name}…", rateLimited: "发送太频繁，请稍后再试。"
    },
    en: {
      open: "Chat with us", title: "Customer support", close: "Close", intro: "Tell us your name and we will be right with you.",
      name: "Your name", email: "Email (optional)", phone: "Phone (optional)", start: "Start chat",
      placeholder: "Type a message, Enter to send", send: "Send", attach: "Send a picture or file", file: "File", agent: "Support",
      connecting: "Connecting…", online: "Connected", reconnecting: "Connection lost, reconnecting…",
      pending: "Sending", acked: "Delivered", failed: "Not sent",
      tooLong: "A message can be at most 5000 characters.", nameRequired: "Please tell us your name.",
      badEmail: "That email address does not look right.", newMessage: "New message",
      typing: "{name} is typing…", someone: "Support",
      queue: "{ahead} customers are ahead of you. Expected wait: about {minutes} min.",
      queueNext: "You are next: an agent will be with you in a moment.",
      pendingWait: "We will answer within {minutes} min.", assigned: "{name} has joined and is reading your message.",
      atRisk: "We are busier than usual, thank you for waiting.",
      noAgents: "No agent is online right now. Leave a message and we will answer by email.",
      noAgentsNoEmail: "No agent is online right now. Leave a message and your email, and we will answer by email.",
      leaveEmail: "Your email", leaveEmailSend: "Leave email", emailSaved: "Thank you: we will answer by email.",
      transcript: "Email me the transcript", transcriptTo: "Email for the transcript", transcriptSend: "Send",
      transcriptQueued: "The transcript is on its way to {to}.",
      closed: "This conversation is closed. Write again any time to start a new one.",
      fileTooLarge: "Files can be at most {mb} MB.", uploading: "Uploading {name}…",
      rateLimited: "Too many messages at once, please wait a moment."
    }
  };
  var t = STRINGS[lang];

  function fmt(template, values) {
    return template.replace(/\{(\w+)\}/g, function (_, key) { return values[key] === undefined ? "" : String(values[key]); });
  }

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
  // The session secret: the server derives the visitor from it; it never leaves this browser
  // except to our own server.
  var session = load(KEYS.session, null);
  if (typeof session !== "string" || !/^[A-Za-z0-9_-]{16,64}$/.test(session)) {
    session = randomId("v_");
    save(KEYS.session, session);
  }
  var profile = load(KEYS.profile, null);
  if (!profile && verifiedUser && script.getAttribute("data-name")) {
    profile = { name: script.getAttribute("data-name"), email: script.getAttribute("data-email") || null };
  }
  var outbox = load(KEYS.outbox, []);  // [{client_message_id, text, files: [{upload_id, filename}]}], oldest first
  if (!Array.isArray(outbox)) { outbox = []; }
  // What this page shows: everything of ticket_id up to seq. Kept in memory only: a new page
  // (reload, another tab) has shown nothing yet and is sent the whole conversation.
  var position = { ticket_id: null, seq: 0 };
  var socket = null;
  var welcomed = false;
  var attempt = 0;
  var reconnectTimer = null;
  var resendTimer = null;
  var syncTimer = null;
  var receivedTimer = null;
  var typingTimer = null;
  var lastTypingSent = 0;
  var ahead = {};       // seq -> true: entries held beyond the contiguous position
  var bubbles = {};     // client_message_id -> element
  var replies = {};     // reply_id -> true
  var unread = 0;
  var agentsOnline = null;
  var emailKnown = false;

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
    ".tm-float{position:fixed;right:20px;bottom:80px;width:360px;max-width:calc(100vw - 40px);height:540px;max-height:calc(100vh - 110px);z-index:2147483000;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.25);overflow:hidden}",
    ".tm-embedded{max-width:720px;height:calc(100vh - 90px);min-height:420px;margin:0 auto;border:1px solid #d0d7de;border-radius:10px;overflow:hidden}",
    ".tm-hidden{display:none!important}",
    ".tm-head{display:flex;justify-content:space-between;align-items:center;gap:8px;padding:10px 14px;background:#1f6feb;color:#fff}",
    ".tm-head strong{flex:1}",
    ".tm-head button{border:0;background:transparent;color:#fff;font-size:13px;cursor:pointer}",
    ".tm-head .tm-close{font-size:18px}",
    ".tm-status,.tm-queue{padding:4px 14px;font-size:12px;color:#57606a;background:#f6f8fa;border-bottom:1px solid #eaeef2}",
    ".tm-queue{color:#0a3069;background:#ddf4ff}",
    ".tm-queue[data-state=no_agents]{color:#7d4e00;background:#fff8c5}",
    ".tm-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}",
    ".tm-msg{max-width:80%;padding:8px 10px;border-radius:10px;white-space:pre-wrap;word-wrap:break-word}",
    ".tm-msg-customer{align-self:flex-end;background:#ddf4ff}",
    ".tm-msg-agent{align-self:flex-start;background:#f6f8fa;border:1px solid #eaeef2}",
    ".tm-author{display:block;font-size:12px;color:#57606a;margin-bottom:2px}",
    ".tm-file{display:block;font-size:12px;color:#0969da}",
    ".tm-file img{display:block;max-width:200px;max-height:160px;margin-top:4px;border-radius:6px}",
    ".tm-tick{display:block;text-align:right;font-size:11px;color:#57606a}",
    ".tm-msg[data-state=acked] .tm-tick{color:#1a7f37}",
    ".tm-msg[data-state=failed] .tm-tick{color:#d1242f}",
    ".tm-typing{padding:0 14px;font-size:12px;color:#57606a;min-height:1.3em}",
    ".tm-compose{display:flex;gap:8px;padding:10px;border-top:1px solid #eaeef2}",
    ".tm-compose textarea{flex:1;resize:none;height:56px;padding:6px 8px;border:1px solid #d0d7de;border-radius:6px;font:inherit}",
    ".tm-compose button,.tm-prechat button,.tm-inline-form button{border:0;border-radius:6px;padding:0 14px;background:#1f6feb;color:#fff;font:inherit;cursor:pointer}",
    ".tm-compose .tm-attach{background:#f6f8fa;color:#1f2328;border:1px solid #d0d7de;padding:0 10px}",
    ".tm-prechat{display:flex;flex-direction:column;gap:10px;padding:16px}",
    ".tm-prechat input,.tm-inline-form input{padding:8px;border:1px solid #d0d7de;border-radius:6px;font:inherit}",
    ".tm-prechat button{padding:9px 14px}",
    ".tm-inline-form{display:flex;gap:8px;padding:6px 10px;border-top:1px solid #eaeef2}",
    ".tm-inline-form input{flex:1}",
    ".tm-notice{color:#d1242f;font-size:12px;min-height:1em;padding:0 12px}",
    ".tm-info{color:#1a7f37;font-size:12px;padding:0 12px}"
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
  var transcriptButton = el("button", "tm-transcript tm-hidden", "✉ " + t.transcript);
  transcriptButton.type = "button";
  head.appendChild(transcriptButton);
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
  var queueLine = el("div", "tm-queue tm-hidden");
  queueLine.setAttribute("aria-live", "polite");
  panel.appendChild(queueLine);

  var prechat = el("form", "tm-prechat");
  prechat.appendChild(el("p", "", t.intro));
  function field(className, name, placeholder, type, maxLength, autocomplete) {
    var input = el("input", className);
    input.name = name; input.placeholder = placeholder; input.type = type; input.maxLength = maxLength;
    input.autocomplete = autocomplete;
    prechat.appendChild(input);
    return input;
  }
  var nameInput = field("tm-name", "name", t.name, "text", 200, "name");
  var emailInput = field("tm-email", "email", t.email, "email", 320, "email");
  var phoneInput = field("tm-phone", "phone", t.phone, "tel", 32, "tel");
  if (profile) { nameInput.value = profile.name || ""; emailInput.value = profile.email || ""; }
  var startButton = el("button", "tm-start", t.start);
  startButton.type = "submit";
  var prechatNotice = el("div", "tm-notice");
  prechat.appendChild(startButton);
  prechat.appendChild(prechatNotice);
  panel.appendChild(prechat);

  var logBox = el("div", "tm-log");
  logBox.setAttribute("aria-live", "polite");
  panel.appendChild(logBox);
  var typingLine = el("div", "tm-typing");
  panel.appendChild(typingLine);
  var notice = el("div", "tm-notice");
  notice.setAttribute("role", "alert");
  panel.appendChild(notice);
  var info = el("div", "tm-info");
  panel.appendChild(info);

  var transcriptForm = el("form", "tm-inline-form tm-transcript-form tm-hidden");
  var transcriptEmail = el("input", "tm-transcript-email");
  transcriptEmail.type = "email"; transcriptEmail.placeholder = t.transcriptTo; transcriptEmail.maxLength = 320;
  var transcriptSend = el("button", "tm-transcript-send", t.transcriptSend);
  transcriptSend.type = "submit";
  transcriptForm.appendChild(transcriptEmail);
  transcriptForm.appendChild(transcriptSend);
  panel.appendChild(transcriptForm);

  var emailForm = el("form", "tm-inline-form tm-email-form tm-hidden");
  var leaveEmail = el("input", "tm-leave-email");
  leaveEmail.type = "email"; leaveEmail.placeholder = t.leaveEmail; leaveEmail.maxLength = 320;
  leaveEmail.autocomplete = "email";
  var leaveEmailSend = el("button", "tm-leave-email-send", t.leaveEmailSend);
  leaveEmailSend.type = "submit";
  emailForm.appendChild(leaveEmail);
  emailForm.appendChild(leaveEmailSend);
  panel.appendChild(emailForm);

  var compose = el("form", "tm-compose");
  var input = el("textarea", "tm-input");
  input.placeholder = t.placeholder; input.maxLength = TEXT_MAX; input.rows = 2;
  input.setAttribute("aria-label", t.placeholder);
  var fileInput = el("input", "tm-file-input tm-hidden");
  fileInput.type = "file"; fileInput.accept = "image/png,image/jpeg,image/gif,image/webp,application/pdf";
  var attachButton = el("button", "tm-attach", "+ " + t.file);
  attachButton.type = "button"; attachButton.title = t.attach; attachButton.setAttribute("aria-label", t.attach);
  var sendButton = el("button", "tm-send", t.send);
  sendButton.type = "submit";
  compose.appendChild(fileInput);
  compose.appendChild(attachButton);
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

  function renderFiles(bubble, files) {
    for (var i = 0; files && i < files.length; i++) {
      var file = files[i];
      var line = el("span", "tm-file", t.file + ": " + String(file.filename || ""));
      if (file.preview) {  // this browser's own copy of an image it just sent
        var img = el("img");
        img.src = file.preview; img.alt = String(file.filename || "");
        line.appendChild(img);
      }
      bubble.appendChild(line);
    }
  }

  function renderCustomer(cmid, text, state, files) {
    var bubble = bubbles[cmid];
    if (!bubble) {
      bubble = el("div", "tm-msg tm-msg-customer");
      bubble.setAttribute("data-cmid", cmid);
      bubble.appendChild(el("span", "tm-text", text));
      renderFiles(bubble, files);
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
    typingLine.textContent = "";
    queueLine.classList.add("tm-hidden");
    transcriptButton.classList.remove("tm-hidden");
    scrollDown();
    if (mode === "float" && panel.classList.contains("tm-hidden") && badge) {
      unread += 1;
      badge.textContent = String(unread);
      badge.classList.remove("tm-hidden");
    }
  }

  function renderEntry(entry) {
    if (entry.from === "agent") { renderAgent(entry); }
    else { renderCustomer(String(entry.client_message_id), String(entry.text || ""), "acked", entry.files); }
    keepPendingLast();
  }

  function keepPendingLast() {
    // What the server has not confirmed yet comes after everything it has (its place is decided then).
    for (var i = 0; i < outbox.length; i++) {
      var bubble = bubbles[outbox[i].client_message_id];
      if (bubble && bubble.getAttribute("data-state") !== "acked") { logBox.appendChild(bubble); }
    }
  }

  function clearLog() {
    while (logBox.firstChild) { logBox.removeChild(logBox.firstChild); }
    bubbles = {};
    replies = {};
    ahead = {};
    transcriptButton.classList.add("tm-hidden");
  }

  // ---- positions: what this browser holds ------------------------------------------------------
  function noteSeq(seq) {
    seq = Number(seq);
    if (!seq || seq <= position.seq) { return; }
    ahead[seq] = true;
    var moved = false;
    while (ahead[position.seq + 1]) { delete ahead[position.seq + 1]; position.seq += 1; moved = true; }
    if (moved) { confirmReceived(); }
    for (var key in ahead) { if (ahead.hasOwnProperty(key)) { askSync(); break; } }
  }

  function confirmReceived() {
    clearTimeout(receivedTimer);
    receivedTimer = setTimeout(function () { sendFrame({ type: "received", seq: position.seq }); }, 200);
  }

  function askSync() {
    // A position was skipped (a frame lost with a socket): ask for what follows what we hold.
    if (syncTimer) { return; }
    syncTimer = setTimeout(function () { syncTimer = null; sendFrame({ type: "sync", since: position.seq }); }, 500);
  }

  function applyEntries(entries) {
    for (var i = 0; i < entries.length; i++) {
      var entry = entries[i];
      if (Number(entry.seq) > position.seq + 1 && i === 0 && !ahead[position.seq + 1]) {
        // The server no longer keeps what lies between (a very long conversation): skip ahead.
        position.seq = Number(entry.seq) - 1;
      }
      renderEntry(entry);
      noteSeq(entry.seq);
    }
  }

  // ---- outbox ----------------------------------------------------------------------------------
  function persistOutbox() { save(KEYS.outbox, outbox.map(function (item) {
    return { client_message_id: item.client_message_id, text: item.text,
             files: (item.files || []).map(function (f) { return { upload_id: f.upload_id, filename: f.filename }; }) };
  })); }

  function dropFromOutbox(cmid) {
    outbox = outbox.filter(function (item) { return item.client_message_id !== cmid; });
    persistOutbox();
  }

  function sendFrame(frame) {
    if (!welcomed || !socket || socket.readyState !== WebSocket.OPEN) { return false; }
    socket.send(JSON.stringify(frame));
    return true;
  }

  function transmit(item) {
    var frame = { type: "message", client_message_id: item.client_message_id, text: item.text };
    if (item.files && item.files.length) { frame.files = item.files.map(function (f) { return f.upload_id; }); }
    sendFrame(frame);
  }

  function flushOutbox() {
    for (var i = 0; i < outbox.length; i++) { transmit(outbox[i]); }
  }

  function queueMessage(text, files) {
    var item = { client_message_id: randomId("m_"), text: text, files: files || [] };
    outbox.push(item);
    persistOutbox();
    renderCustomer(item.client_message_id, text, "pending", item.files);
    transmit(item);
  }

  function sendMessage() {
    var text = input.value.replace(/^\s+|\s+$/g, "");
    notice.textContent = "";
    if (!text) { return; }
    if (text.length > TEXT_MAX) { notice.textContent = t.tooLong; return; }
    input.value = "";
    queueMessage(text, []);
  }

  function identityFields(target) {
    if (verifiedUser) {
      target.site = verifiedUser.site; target.user_id = verifiedUser.user_id; target.user_hash = verifiedUser.user_hash;
    } else {
      target.session = session;
    }
    return target;
  }

  function uploadFile(file) {
    notice.textContent = "";
    if (file.size > FILE_MAX) { notice.textContent = fmt(t.fileTooLarge, { mb: Math.round(FILE_MAX / 1048576) }); return; }
    info.textContent = fmt(t.uploading, { name: file.name });
    var form = new FormData();
    var fields = identityFields({});
    for (var key in fields) { if (fields.hasOwnProperty(key)) { form.append(key, fields[key]); } }
    form.append("file", file, file.name);
    fetch(serverOrigin + "/api/chat/uploads", { method: "POST", body: form, credentials: "omit" })
      .then(function (response) { return response.json().then(function (body) { return { ok: response.ok, body: body }; }); })
      .then(function (result) {
        info.textContent = "";
        if (!result.ok) {
          notice.textContent = result.body && result.body.error ? String(result.body.error.message) : t.failed;
          return;
        }
        var entry = { upload_id: result.body.upload_id, filename: result.body.filename };
        if (/^image\//.test(result.body.content_type) && window.URL && URL.createObjectURL) {
          entry.preview = URL.createObjectURL(file);
        }
        var text = input.value.replace(/^\s+|\s+$/g, "");
        input.value = "";
        queueMessage(text, [entry]);
      })
      .catch(function () { info.textContent = ""; notice.textContent = t.failed; });
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
      var hello = identityFields({
        type: "hello", name: profile ? profile.name : "", email: profile && profile.email ? profile.email : null,
        phone: profile && profile.phone ? profile.phone : null, language: lang,
        ticket_id: position.ticket_id, since: position.seq
      });
      ws.send(JSON.stringify(hello));
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

  function scheduleResend(delayMs) {
    // The server could not confirm (broker away) or asked us to slow down: try the outbox again.
    if (resendTimer) { return; }
    var delay = delayMs || Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    if (!delayMs) { attempt += 1; }
    resendTimer = setTimeout(function () { resendTimer = null; flushOutbox(); }, delay);
  }

  function showQueue(frame) {
    var text = "";
    if (frame.state === "no_agents") { text = emailKnown ? t.noAgents : t.noAgentsNoEmail; }
    else if (frame.state === "assigned") { text = fmt(t.assigned, { name: frame.agent_name || t.someone }); }
    else if (frame.state === "waiting" && frame.position === 1 && !frame.expected_wait_seconds) { text = t.queueNext; }
    else if (frame.state === "waiting") {
      text = fmt(t.queue, { ahead: Math.max(Number(frame.position) - 1, 0),
                            minutes: Math.max(1, Math.round(Number(frame.expected_wait_seconds || 0) / 60)) });
      if (frame.at_risk) { text += " " + t.atRisk; }
    } else if (frame.state === "pending" && frame.expected_wait_seconds) {
      text = fmt(t.pendingWait, { minutes: Math.max(1, Math.round(Number(frame.expected_wait_seconds) / 60)) });
    }
    queueLine.textContent = text;
    // Nobody online and no address yet: ask for one, so the answer can come by email.
    emailForm.classList.toggle("tm-hidden", !(frame.state === "no_agents" && !emailKnown));
    queueLine.setAttribute("data-state", String(frame.state));
    queueLine.classList.toggle("tm-hidden", !text);
  }

  function onFrame(frame) {
    if (frame.type === "welcome") {
      welcomed = true;
      attempt = 0;
      emailKnown = !!frame.email_known;
      agentsOnline = Number(frame.agents_online || 0);
      setStatus(t.online);
      var history = Array.isArray(frame.history) ? frame.history : [];
      if (!frame.resumed) {
        clearLog();
        position = { ticket_id: frame.ticket_id || null, seq: 0 };
      }
      position.ticket_id = frame.ticket_id || null;
      applyEntries(history);
      var delivered = {};
      for (var i = 0; i < history.length; i++) { delivered[history[i].client_message_id] = true; }
      outbox = outbox.filter(function (item) { return !delivered[item.client_message_id]; });
      persistOutbox();
      for (var j = 0; j < outbox.length; j++) {
        renderCustomer(outbox[j].client_message_id, outbox[j].text, "pending", outbox[j].files);
      }
      if (agentsOnline === 0 && !frame.ticket_id) { showQueue({ state: "no_agents" }); }
      if (frame.resumed || history.length) { confirmReceived(); }
      flushOutbox();
    } else if (frame.type === "ack") {
      if (frame.ticket_id && frame.ticket_id !== position.ticket_id) {
        position = { ticket_id: frame.ticket_id, seq: 0 };
        ahead = {};
      }
      dropFromOutbox(frame.client_message_id);
      setState(frame.client_message_id, "acked");
      noteSeq(frame.seq);
    } else if (frame.type === "customer_message") {
      renderCustomer(String(frame.client_message_id), String(frame.text || ""), "acked", frame.files);
      noteSeq(frame.seq);
    } else if (frame.type === "agent_message") {
      renderAgent(frame);
      keepPendingLast();
      noteSeq(frame.seq);
    } else if (frame.type === "history") {
      applyEntries(Array.isArray(frame.entries) ? frame.entries : []);
    } else if (frame.type === "queue") {
      showQueue(frame);
    } else if (frame.type === "agent_typing") {
      typingLine.textContent = frame.typing ? fmt(t.typing, { name: frame.agent_name || t.someone }) : "";
      clearTimeout(typingTimer);
      typingTimer = setTimeout(function () { typingLine.textContent = ""; }, AGENT_TYPING_SHOWN_MS);
    } else if (frame.type === "closed") {
      info.textContent = t.closed;
      queueLine.classList.add("tm-hidden");
    } else if (frame.type === "profile_saved") {
      emailKnown = !!frame.email_known;
      emailForm.classList.add("tm-hidden");
      if (emailKnown) {
        info.textContent = t.emailSaved;
        if (queueLine.getAttribute("data-state") === "no_agents") { queueLine.textContent = t.noAgents; }
      }
    } else if (frame.type === "transcript_queued") {
      transcriptForm.classList.add("tm-hidden");
      info.textContent = fmt(t.transcriptQueued, { to: frame.to });
    } else if (frame.type === "error") {
      if (frame.code === "unavailable") { scheduleResend(); return; }
      if (frame.code === "rate_limited") {
        notice.textContent = t.rateLimited;
        scheduleResend(1000 * Math.max(1, Number(frame.retry_after) || 5));
        return;
      }
      if (frame.code === "email_required") {
        transcriptForm.classList.remove("tm-hidden");
        transcriptEmail.focus();
        return;
      }
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
    var phone = phoneInput.value.replace(/^\s+|\s+$/g, "");
    if (!name) { prechatNotice.textContent = t.nameRequired; return; }
    if (email && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) { prechatNotice.textContent = t.badEmail; return; }
    profile = { name: name, email: email || null, phone: phone || null };
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

  input.addEventListener("input", function () {
    var now = Date.now();
    if (position.ticket_id && now - lastTypingSent > TYPING_EVERY_MS && sendFrame({ type: "typing", typing: true })) {
      lastTypingSent = now;
    }
  });

  attachButton.addEventListener("click", function () { fileInput.click(); });
  fileInput.addEventListener("change", function () {
    if (fileInput.files && fileInput.files[0]) { uploadFile(fileInput.files[0]); }
    fileInput.value = "";
  });

  transcriptButton.addEventListener("click", function () {
    notice.textContent = "";
    if (emailKnown || (profile && profile.email)) { sendFrame({ type: "transcript" }); }
    else { transcriptForm.classList.remove("tm-hidden"); transcriptEmail.focus(); }
  });
  emailForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var email = leaveEmail.value.replace(/^\s+|\s+$/g, "");
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) { notice.textContent = t.badEmail; return; }
    notice.textContent = "";
    if (profile) { profile.email = email; save(KEYS.profile, profile); }
    sendFrame({ type: "profile", email: email });
  });

  transcriptForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var email = transcriptEmail.value.replace(/^\s+|\s+$/g, "");
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) { notice.textContent = t.badEmail; return; }
    emailKnown = true;
    sendFrame({ type: "transcript", email: email });
  });

  window.__ticketmeshChat = {
    reconnect: function () { if (socket) { socket.close(); } },
    visitorSession: function () { return session; },
    position: function () { return { ticket_id: position.ticket_id, seq: position.seq }; }
  };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mount);
  } else {
    mount();
  }
})();
