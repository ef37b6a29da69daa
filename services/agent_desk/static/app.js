// TicketMesh agent console. Vanilla JS, no build step.
// Customer-supplied text is only ever put on the page with textContent, never innerHTML.
"use strict";

const LABELS = {
  zh: {
    title: "坐席工作台", signIn: "登录", agentId: "坐席账号", password: "密码", logout: "退出",
    presence: "状态", online: "在线", away: "离开", offline: "离线", worklist: "我的工单", noTickets: "暂无工单",
    status: "状态", channel: "渠道", customer: "客户", priority: "优先级", skills: "所需技能", why: "分配原因",
    sla: "SLA", accept: "接受", resolve: "解决", send: "发送回复", replyPlaceholder: "输入回复内容…",
    connected: "已连接", reconnecting: "连接中断，正在重连…", loginFailed: "账号或密码错误",
    tooMany: "失败次数过多，请稍后再试", failed: "操作失败：", otherLang: "English", you: "我", system: "系统",
    none: "无", slaWarning: "SLA 即将超时", slaBreached: "SLA 已超时",
    st_new: "新建", st_queued: "排队中", st_assigned: "已分配", st_accepted: "处理中", st_resolved: "已解决",
    ch_email: "邮件", ch_chat: "在线咨询", ch_phone: "电话",
  },
  en: {
    title: "Agent console", signIn: "Sign in", agentId: "Agent id", password: "Password", logout: "Sign out",
    presence: "Presence", online: "Online", away: "Away", offline: "Offline", worklist: "My tickets", noTickets: "No tickets",
    status: "Status", channel: "Channel", customer: "Customer", priority: "Priority", skills: "Required skills",
    why: "Why assigned", sla: "SLA", accept: "Accept", resolve: "Resolve", send: "Send reply",
    replyPlaceholder: "Type your reply…", connected: "Connected", reconnecting: "Connection lost, reconnecting…",
    loginFailed: "Wrong agent id or password", tooMany: "Too many failed attempts, try again later",
    failed: "Failed: ", otherLang: "中文", you: "me", system: "System", none: "none",
    slaWarning: "SLA at risk", slaBreached: "SLA breached",
    st_new: "New", st_queued: "Queued", st_assigned: "Assigned", st_accepted: "In progress", st_resolved: "Resolved",
    ch_email: "Email", ch_chat: "Chat", ch_phone: "Phone",
  },
};

const state = {
  lang: localStorage.getItem("tm.lang") || (navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en"),
  me: null,
  tickets: new Map(),   // ticket_id -> ticket view
  sla: new Map(),       // ticket_id -> "sla_warning" | "sla_breached"
  selected: null,
  socket: null,
  retryDelay: 1000,
  audio: null,
  // The reply being sent: the same ticket and text keep the same client_reply_id until the
  // server accepts it, so a retry after a lost answer is one reply, not two.
  replyDraft: null,     // {ticketId, text, clientReplyId}
};

const $ = (id) => document.getElementById(id);
const t = (key) => LABELS[state.lang][key] ?? key;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function applyLabels() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  document.title = "TicketMesh – " + t("title");
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  for (const node of document.querySelectorAll("[data-i18n-label]")) node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  $("lang-toggle").textContent = t("otherLang");
  renderWorklist();
  renderTicket();
}

// -- HTTP -----------------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (response.status === 401 && path !== "/api/login") showLogin();
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

// -- sign-in --------------------------------------------------------------------------------

function showLogin() {
  state.me = null;
  if (state.socket) state.socket.close(1000);
  $("session-bar").hidden = true;
  $("console-view").hidden = true;
  $("login-view").hidden = false;
  $("login-agent").focus();
}

function showConsole(me) {
  state.me = me;
  $("login-view").hidden = true;
  $("console-view").hidden = false;
  $("session-bar").hidden = false;
  $("agent-name").textContent = me.name;
  renderPresence(me.presence);
  connect();
}

async function onLogin(event) {
  event.preventDefault();
  unlockAudio();
  $("login-error").textContent = "";
  try {
    const me = await api("POST", "/api/login", { agent_id: $("login-agent").value.trim(), password: $("login-password").value });
    $("login-password").value = "";
    showConsole(me);
  } catch (error) {
    $("login-error").textContent = error.status === 429 ? t("tooMany") : t("loginFailed");
  }
}

async function onLogout() {
  try { await api("POST", "/api/logout"); } finally { state.tickets.clear(); state.selected = null; showLogin(); }
}

function renderPresence(presence) {
  for (const button of document.querySelectorAll("#presence button")) {
    button.setAttribute("aria-pressed", String(button.dataset.presence === presence));
  }
}

async function onPresence(event) {
  const button = event.target.closest("button[data-presence]");
  if (!button) return;
  unlockAudio();
  try {
    const result = await api("POST", "/api/presence", { presence: button.dataset.presence });
    renderPresence(result.presence);
  } catch (error) {
    $("action-error").textContent = t("failed") + error.message;
  }
}

// -- WebSocket ------------------------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const socket = new WebSocket(scheme + location.host + "/ws");
  state.socket = socket;
  socket.addEventListener("open", () => {
    state.retryDelay = 1000;
    setConnection(true);
  });
  socket.addEventListener("message", (event) => handleFrame(JSON.parse(event.data)));
  socket.addEventListener("close", (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (!state.me || event.code === 1000) return;
    if (event.code === 4401) { showLogin(); return; }
    setConnection(false);
    // Another replica takes over after a restart ("going away"): come back with backoff.
    setTimeout(() => { if (state.me && !state.socket) connect(); }, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 15000);
  });
}

function setConnection(up) {
  const node = $("connection");
  node.textContent = up ? t("connected") : t("reconnecting");
  node.classList.toggle("down", !up);
  node.dataset.state = up ? "up" : "down";
}

function handleFrame(frame) {
  switch (frame.type) {
    case "hello":
      renderPresence(frame.agent.presence);
      break;
    case "worklist":
      state.tickets.clear();
      for (const ticket of frame.tickets) state.tickets.set(ticket.ticket_id, ticket);
      if (!state.tickets.has(state.selected)) state.selected = frame.tickets.length ? frame.tickets[0].ticket_id : null;
      renderWorklist();
      renderTicket();
      $("worklist").dataset.loaded = "true";  // the push channel is live from here on
      break;
    case "ticket_assigned":
      upsert(frame.ticket, true);
      beep();
      break;
    case "ticket_updated":
      upsert(frame.ticket, false);
      break;
    case "customer_message": {
      const ticket = state.tickets.get(frame.ticket_id);
      if (!ticket) break;
      if (!ticket.messages.some((m) => m.message_id === frame.message_id)) {
        ticket.messages.push({ message_id: frame.message_id, author: "customer", text: frame.text, at: frame.received_at });
      }
      renderWorklist();
      if (state.selected === frame.ticket_id) renderTicket();
      beep();
      break;
    }
    case "sla_warning":
    case "sla_breached":
      if (state.sla.get(frame.ticket_id) !== "sla_breached") state.sla.set(frame.ticket_id, frame.type);
      renderWorklist();
      if (state.selected === frame.ticket_id) renderTicket();
      break;
    case "presence":
      renderPresence(frame.presence);
      break;
  }
}

function upsert(ticket, fresh) {
  const mine = ticket.agent_id === state.me.agent_id && ticket.status !== "resolved";
  if (mine) state.tickets.set(ticket.ticket_id, ticket);
  else if (state.selected !== ticket.ticket_id) state.tickets.delete(ticket.ticket_id);
  else state.tickets.set(ticket.ticket_id, ticket);  // keep showing what the agent is looking at
  if (!state.selected && mine) state.selected = ticket.ticket_id;
  renderWorklist(fresh ? ticket.ticket_id : null);
  if (state.selected === ticket.ticket_id) renderTicket();
}

// -- rendering ------------------------------------------------------------------------------

function renderWorklist(freshId) {
  const list = $("worklist");
  list.replaceChildren();
  const tickets = [...state.tickets.values()].sort((a, b) => (a.assigned_at || "").localeCompare(b.assigned_at || ""));
  for (const ticket of tickets) {
    const item = el("li");
    item.dataset.ticketId = ticket.ticket_id;
    item.dataset.status = ticket.status;
    if (ticket.ticket_id === state.selected) item.classList.add("selected");
    if (ticket.ticket_id === freshId) item.classList.add("fresh");
    const head = el("div", "meta", ticket.ticket_id + " · " + t("ch_" + ticket.channel) + " · " + t("st_" + ticket.status));
    if (ticket.priority) head.append(el("span", "badge " + ticket.priority, ticket.priority));
    const sla = state.sla.get(ticket.ticket_id);
    if (sla) head.append(el("span", "badge " + sla, t(sla === "sla_breached" ? "slaBreached" : "slaWarning")));
    item.append(head, el("span", "subject", ticket.subject || ticket.text.slice(0, 80)));
    item.addEventListener("click", () => { state.selected = ticket.ticket_id; renderWorklist(); renderTicket(); });
    list.append(item);
  }
  $("worklist-empty").hidden = tickets.length > 0;
}

function renderTicket() {
  const ticket = state.tickets.get(state.selected);
  $("ticket").hidden = !ticket;
  if (!ticket) return;
  $("ticket").dataset.ticketId = ticket.ticket_id;
  $("t-id").textContent = "#" + ticket.ticket_id;
  $("t-subject").textContent = ticket.subject;
  $("t-status").textContent = t("st_" + ticket.status);
  $("t-status").dataset.status = ticket.status;
  $("t-channel").textContent = t("ch_" + ticket.channel);
  const c = ticket.customer;
  $("t-customer").textContent = [c.name, c.email, c.phone].filter(Boolean).join(" · ") || t("none");
  $("t-priority").textContent = ticket.priority || "–";
  $("t-skills").textContent = ticket.required_skills.join(", ") || t("none");
  $("t-decision").textContent = ticket.decision ? ticket.decision.reason : (ticket.queued_reason || "–");
  const sla = state.sla.get(ticket.ticket_id);
  $("t-sla").textContent = sla ? t(sla === "sla_breached" ? "slaBreached" : "slaWarning") : "–";
  $("t-received").textContent = formatTime(ticket.received_at);
  $("t-text").textContent = ticket.text;
  const messages = $("t-messages");
  messages.replaceChildren();
  for (const m of ticket.messages) {
    const item = el("li", "message " + m.author);
    const who = m.author === "agent" ? (m.agent_id === state.me.agent_id ? t("you") : m.agent_id)
      : m.author === "system" ? t("system") : (c.name || t("customer"));
    item.append(el("div", "meta", who + " · " + formatTime(m.at)), el("div", "text", m.text));
    messages.append(item);
  }
  const open = ticket.status === "assigned" || ticket.status === "accepted";
  $("accept").disabled = ticket.status !== "assigned";
  $("resolve").disabled = !open;
  $("reply-send").disabled = ticket.status === "resolved";
}

function formatTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

// -- actions --------------------------------------------------------------------------------

async function act(path, body) {
  const id = state.selected;
  if (!id) return;
  $("action-error").textContent = "";
  try {
    const result = await api("POST", "/api/tickets/" + encodeURIComponent(id) + path, body);
    upsert(result.ticket, false);
    return result;
  } catch (error) {
    $("action-error").textContent = t("failed") + error.message;
    return null;
  }
}

function newClientReplyId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context (https or localhost); getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function onReply(event) {
  event.preventDefault();
  const box = $("reply-text");
  const text = box.value.trim();
  if (!text) return;
  $("reply-send").disabled = true;
  const draft = state.replyDraft;
  if (!draft || draft.ticketId !== state.selected || draft.text !== text) {
    state.replyDraft = { ticketId: state.selected, text, clientReplyId: newClientReplyId() };
  }
  const result = await act("/reply", { text, client_reply_id: state.replyDraft.clientReplyId });
  if (result) {
    box.value = "";
    state.replyDraft = null;
  }
  $("reply-send").disabled = false;
}

// -- a short chime for new work (WebAudio; browsers allow it after the first click) -----------

function unlockAudio() {
  if (state.audio || !window.AudioContext) return;
  try { state.audio = new AudioContext(); } catch (_) { state.audio = null; }
}

function beep() {
  const ctx = state.audio;
  if (!ctx) return;
  try {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.08, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.25);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.25);
  } catch (_) { /* sound is a nicety */ }
}

// -- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("presence").addEventListener("click", onPresence);
  $("accept").addEventListener("click", () => act("/accept"));
  $("resolve").addEventListener("click", () => act("/resolve"));
  $("reply-form").addEventListener("submit", onReply);
  $("lang-toggle").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("tm.lang", state.lang);
    applyLabels();
  });
  applyLabels();
  try {
    showConsole(await api("GET", "/api/me"));
  } catch (_) {
    showLogin();
  }
});
