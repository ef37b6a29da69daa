// TicketMesh agent console. Vanilla JS, no build step.
// Customer-supplied text is only ever put on the page with textContent, never innerHTML: the
// views carry text (HTML mail is already reduced to text at intake), so no markup is rendered.
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
    st_new: "新建", st_queued: "排队中", st_assigned: "待接受", st_accepted: "处理中", st_resolved: "已解决",
    st_reopened: "已重新打开", ch_email: "邮件", ch_chat: "在线咨询", ch_phone: "电话",
    newOffer: "新工单分配", decline: "拒绝", declineReason: "拒绝原因（可选）", offerLeft: "剩余 ", expired: "已过期",
    category: "分类", tags: "标签", reopen: "重新打开", decisions: "分配记录", notePlaceholder: "内部备注（客户不可见）…",
    addNote: "添加内部备注", transferTo: "转交给", reason: "原因", transfer: "转交", name: "姓名", contact: "联系方式",
    tier: "客户等级", language: "语言", history: "历史工单", note: "内部备注", dueIn: "剩余 ", overdue: "已超时 ",
    supervisorView: "主管视图", queues: "按技能排队", skill: "技能", waiting: "等待数", oldestWait: "最长等待",
    byPriority: "按优先级", tickets: "工单", agents: "坐席状态与负载", agent: "坐席", load: "负载", offers: "待接受",
    slaRisk: "SLA 风险工单", ticket: "工单", timeLeft: "剩余时间", reassign: "手动改派", ticketId: "工单号",
    requested: "已提交请求", group: "组：", assignedOutcome: "分配给 ", queuedOutcome: "排队", attempt: "第几次",
    removed: "工单已移出：", r_declined: "已拒绝", r_offer_expired: "分配超时", r_agent_offline: "坐席离线",
    r_agent_away: "坐席离开", r_transferred: "已转交", r_reassigned: "已被改派", r_escalated: "已升级",
    r_roster_removed: "坐席已移除", workStatus: "处理状态", pausesSla: "（SLA 暂停）",
    reportsView: "报表", from: "开始日期", to: "结束日期", groupBy: "分组", by_day: "按天", by_agent: "按坐席",
    by_group: "按团队", by_channel: "按渠道", refresh: "刷新", col_day: "日期", col_agent: "坐席", col_group: "团队",
    col_channel: "渠道", reportNote: "统计所选日期内到达的工单；时长为自然时间（未扣除非工作时间与暂停）。",
    chartSla: "SLA 达成率（按天）", chartResponse: "首次响应时间分布", chartBacklog: "当前积压（按技能）",
    chartCsat: "满意度评分分布", resolvedCount: "已解决", frtP50: "首次响应 P50", frtP90: "首次响应 P90",
    resP50: "解决时长 P50", resP90: "解决时长 P90", slaMet: "SLA 达成率", breaches: "超时次数", escalations: "升级次数",
    csat: "满意度", unassigned: "未分配", noGroup: "无团队", noData: "暂无数据", kpiTickets: "到达工单",
    kpiFrt: "首次响应 P50 / P90", kpiRes: "解决时长 P50 / P90", kpiSla: "SLA 达成率", kpiBreaches: "超时 / 升级",
    kpiCsat: "满意度（份数）", minute: "分", hour: "小时", ticketsUnit: " 张",
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
    st_new: "New", st_queued: "Queued", st_assigned: "Offered", st_accepted: "In progress", st_resolved: "Resolved",
    st_reopened: "Reopened", ch_email: "Email", ch_chat: "Chat", ch_phone: "Phone",
    newOffer: "New ticket offered", decline: "Decline", declineReason: "Reason (optional)", offerLeft: "", expired: "expired",
    category: "Category", tags: "Tags", reopen: "Reopen", decisions: "Decision records",
    notePlaceholder: "Internal note (customers never see it)…", addNote: "Add internal note", transferTo: "Transfer to",
    reason: "Reason", transfer: "Transfer", name: "Name", contact: "Contact", tier: "Tier", language: "Language",
    history: "Earlier tickets", note: "Internal note", dueIn: "due in ", overdue: "overdue by ",
    supervisorView: "Supervisor", queues: "Queues by skill", skill: "Skill", waiting: "Waiting", oldestWait: "Oldest wait",
    byPriority: "By priority", tickets: "Tickets", agents: "Agents: presence and load", agent: "Agent", load: "Load",
    offers: "Offers", slaRisk: "Tickets at SLA risk", ticket: "Ticket", timeLeft: "Time left", reassign: "Reassign",
    ticketId: "Ticket id", requested: "Requested", group: "group: ", assignedOutcome: "assigned to ",
    queuedOutcome: "queued", attempt: "attempt", removed: "Ticket taken off your list: ", r_declined: "declined",
    r_offer_expired: "offer expired", r_agent_offline: "you went offline", r_agent_away: "you went away",
    r_transferred: "transferred", r_reassigned: "reassigned", r_escalated: "escalated", r_roster_removed: "removed",
    reportsView: "Reports", from: "From", to: "To", groupBy: "Group by", by_day: "Day", by_agent: "Agent",
    by_group: "Group", by_channel: "Channel", refresh: "Refresh", col_day: "Day", col_agent: "Agent", col_group: "Group",
    col_channel: "Channel", reportNote: "Tickets received in the chosen days; times are wall-clock (business hours and pauses not taken out).",
    chartSla: "SLA attainment per day", chartResponse: "First response time distribution", chartBacklog: "Backlog now, by skill",
    chartCsat: "CSAT scores", resolvedCount: "Resolved", frtP50: "First response p50", frtP90: "First response p90",
    resP50: "Resolution p50", resP90: "Resolution p90", slaMet: "SLA met", breaches: "Breaches", escalations: "Escalations",
    csat: "CSAT", unassigned: "unassigned", noGroup: "no group", noData: "no data", kpiTickets: "Tickets received",
    kpiFrt: "First response p50 / p90", kpiRes: "Resolution p50 / p90", kpiSla: "SLA met", kpiBreaches: "Breaches / escalations",
    kpiCsat: "CSAT (answers)", minute: "m", hour: "h", ticketsUnit: "",
    workStatus: "Working status", pausesSla: " (SLA paused)",
  },
};

const state = {
  lang: localStorage.getItem("tm.lang") || (navigator.language.toLowerCase().startsWith("zh") ? "zh" : "en"),
  me: null,
  tab: "console",
  tickets: new Map(),   // ticket_id -> ticket view
  sla: new Map(),       // ticket_id -> {type, due_at}
  history: new Map(),   // ticket_id -> the customer's other tickets
  decisions: null,      // decision records of the selected ticket, when shown
  directory: { agents: [], groups: [] },
  board: null,
  boardTimer: null,
  report: null,         // the last report loaded (Reports tab)
  selected: null,
  socket: null,
  retryDelay: 1000,
  audio: null,
  // The reply being sent: the same ticket and text keep the same client_reply_id until the
  // server accepts it, so a retry after a lost answer is one reply, not two.
  replyDraft: null,     // {ticketId, text, clientReplyId}
  noteDraft: null,
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
  renderTargets();
  renderWorklist();
  renderTicket();
  renderBoard();
  renderReport();
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
  $("supervisor-view").hidden = true;
  $("reports-view").hidden = true;
  $("login-view").hidden = false;
  $("login-agent").focus();
}

function showConsole(me) {
  state.me = me;
  $("login-view").hidden = true;
  $("session-bar").hidden = false;
  $("agent-name").textContent = me.name;
  $("tab-supervisor").hidden = me.role !== "supervisor";
  $("tab-reports").hidden = me.role !== "supervisor";
  showTab("console");
  renderPresence(me.presence);
  api("GET", "/api/directory").then((d) => { state.directory = d; renderTargets(); }).catch(() => {});
  connect();
}

function showTab(tab) {
  const supervisor = state.me && state.me.role === "supervisor";
  state.tab = (tab === "supervisor" || tab === "reports") && supervisor ? tab : "console";
  for (const name of ["console", "supervisor", "reports"]) {
    $(name + "-view").hidden = state.tab !== name;
    $("tab-" + name).setAttribute("aria-selected", String(state.tab === name));
  }
  if (state.tab === "supervisor") loadBoard();
  if (state.tab === "reports") loadReport();
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
    case "ticket_assigned":   // an offer (or an assignment that needs no acceptance)
    case "ticket_reopened":
      upsert(frame.ticket, true);
      beep();
      break;
    case "ticket_updated":
      upsert(frame.ticket, false);
      break;
    case "ticket_removed":
      drop(frame.ticket_id, frame.reason);
      break;
    case "customer_message": {
      const ticket = state.tickets.get(frame.ticket_id);
      if (!ticket) break;
      if (!ticket.messages.some((m) => m.message_id === frame.message_id)) {
        ticket.messages.push({ message_id: frame.message_id, author: "customer", channel: frame.channel,
          text: frame.text, at: frame.received_at });
      }
      renderWorklist();
      if (state.selected === frame.ticket_id) renderTicket();
      beep();
      break;
    }
    case "sla_warning":
    case "sla_breached": {
      const current = state.sla.get(frame.ticket_id);
      if (!current || current.type !== "sla_breached") state.sla.set(frame.ticket_id, { type: frame.type, due_at: frame.due_at });
      renderWorklist();
      if (state.selected === frame.ticket_id) renderTicket();
      break;
    }
    case "presence":
      renderPresence(frame.presence);
      break;
    case "board_changed":
      scheduleBoard();
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

function drop(ticketId, reason) {
  if (!state.tickets.delete(ticketId)) return;
  if (state.selected === ticketId) {
    state.selected = state.tickets.size ? state.tickets.keys().next().value : null;
    $("action-error").textContent = t("removed") + t("r_" + reason);
  }
  renderWorklist();
  renderTicket();
}

// -- rendering: console ---------------------------------------------------------------------

function slaOf(ticket) {
  const pushed = state.sla.get(ticket.ticket_id);
  if (pushed) return pushed;
  const clocks = Object.values(ticket.sla || {});
  if (!clocks.length) return null;
  const breached = clocks.some((c) => c.state === "breached");
  return { type: breached ? "sla_breached" : "sla_warning", due_at: ticket.sla_due_at };
}

function countdown(iso) {
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  const text = (abs >= 3600 ? Math.floor(abs / 3600) + "h " : "") + Math.floor((abs % 3600) / 60) + "m " + (abs % 60) + "s";
  return { seconds, text };
}

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
    const sla = slaOf(ticket);
    if (sla) head.append(el("span", "badge " + sla.type, t(sla.type === "sla_breached" ? "slaBreached" : "slaWarning")));
    item.append(head, el("span", "subject", ticket.subject || ticket.text.slice(0, 80)));
    item.addEventListener("click", () => select(ticket.ticket_id));
    list.append(item);
  }
  $("worklist-empty").hidden = tickets.length > 0;
}

function select(ticketId) {
  state.selected = ticketId;
  state.decisions = null;
  renderWorklist();
  renderTicket();
}

async function loadDetails(ticketId) {
  try {
    const body = await api("GET", "/api/tickets/" + encodeURIComponent(ticketId));
    state.history.set(ticketId, body.history);
    if (state.selected === ticketId) renderTicket();
  } catch (_) { /* the ticket may have moved on */ }
}

function renderTicket() {
  const ticket = state.tickets.get(state.selected);
  $("ticket").hidden = !ticket;
  if (!ticket) return;
  if (!state.history.has(ticket.ticket_id)) { state.history.set(ticket.ticket_id, []); loadDetails(ticket.ticket_id); }
  $("ticket").dataset.ticketId = ticket.ticket_id;
  $("t-id").textContent = "#" + ticket.ticket_id;
  $("t-subject").textContent = ticket.subject;
  $("t-status").textContent = t("st_" + ticket.status);
  $("t-status").dataset.status = ticket.status;
  $("t-channel").textContent = t("ch_" + ticket.channel);
  const c = ticket.customer;
  $("t-customer").textContent = c.name || t("none");
  $("t-contact").textContent = [c.email, c.phone].filter(Boolean).join(" · ") || t("none");
  $("t-tier").textContent = ticket.customer_tier || c.tier || "–";
  $("t-language").textContent = ticket.language || c.language || "–";
  $("t-priority").textContent = ticket.priority || "–";
  $("t-category").textContent = ticket.category || "–";
  const tags = $("t-tags");
  tags.replaceChildren(...[...ticket.tags, ...ticket.signals].map((tag) => el("span", "tag", tag)));
  if (!tags.childElementCount) tags.textContent = "–";
  $("t-skills").textContent = ticket.required_skills.join(", ") || t("none");
  $("t-decision").textContent = ticket.decision ? ticket.decision.reason : (ticket.queued_reason || "–");
  $("t-received").textContent = t("ch_" + ticket.channel) + " · " + formatTime(ticket.received_at);
  $("t-text").textContent = ticket.text;
  const messages = $("t-messages");
  messages.replaceChildren();
  for (const m of ticket.messages) {
    const item = el("li", "message " + m.author);
    const who = m.author === "agent" ? (m.agent_id === state.me.agent_id ? t("you") : m.agent_id)
      : m.author === "note" ? t("note") + " · " + (m.agent_id === state.me.agent_id ? t("you") : m.agent_id)
      : m.author === "system" ? t("system") : (c.name || t("customer")) + (m.channel ? " · " + t("ch_" + m.channel) : "");
    item.append(el("div", "meta", who + " · " + formatTime(m.at)), el("div", "text", m.text));
    messages.append(item);
  }
  const history = $("t-history");
  history.replaceChildren(...(state.history.get(ticket.ticket_id) || []).map((h) =>
    el("li", null, h.ticket_id + " · " + t("ch_" + h.channel) + " · " + t("st_" + h.status) + " · " + h.subject)));
  renderDecisions();
  const open = ["assigned", "accepted", "reopened"].includes(ticket.status);
  $("offer").hidden = ticket.status !== "assigned" || ticket.agent_id !== state.me.agent_id;
  $("accept").disabled = ticket.status !== "assigned";
  $("resolve").disabled = !open;
  $("reopen").hidden = ticket.status !== "resolved";
  $("reply-send").disabled = ticket.status === "resolved";
  $("transfer-send").disabled = !open;
  renderWorkStatus(ticket, open);
  tick();
}

// The statuses and which of them pause the SLA clocks come from the server (/api/me).
function renderWorkStatus(ticket, open) {
  const select = $("t-work-status");
  select.replaceChildren(...(state.me.statuses || []).map((s) => {
    const option = el("option", null, (state.lang === "zh" ? s.label_zh : s.label_en) + (s.pauses_sla ? t("pausesSla") : ""));
    option.value = s.status;
    return option;
  }));
  select.value = ticket.work_status || "open";
  select.dataset.status = select.value;
  select.disabled = !open;
}

function renderDecisions() {
  const list = $("t-decisions");
  list.hidden = !state.decisions;
  list.replaceChildren(...(state.decisions || []).map((r) => {
    const outcome = r.outcome === "assigned" ? t("assignedOutcome") + r.agent_id : t("queuedOutcome");
    const item = el("li", null, formatTime(r.at) + " · " + outcome + " · " + r.decision.step + " · " + r.decision.reason);
    const candidates = (r.decision.candidates || []).map((c) => c.agent_id + " " + c.score.toFixed(2)).join(", ");
    if (candidates) item.append(el("div", "meta", candidates));
    const rejected = Object.entries(r.decision.rejected_counts || {}).map(([k, v]) => k + " " + v).join(", ");
    if (rejected) item.append(el("div", "meta", rejected));
    return item;
  }));
}

function renderTargets() {
  for (const id of ["transfer-target", "sv-target"]) {
    const select = $(id);
    const current = select.value;
    select.replaceChildren();
    for (const agent of state.directory.agents) {
      if (state.me && agent.agent_id === state.me.agent_id && id === "transfer-target") continue;
      const option = el("option", null, agent.name + " (" + agent.agent_id + ")");
      option.value = "agent:" + agent.agent_id;
      select.append(option);
    }
    for (const group of state.directory.groups) {
      const option = el("option", null, t("group") + group);
      option.value = "group:" + group;
      select.append(option);
    }
    if (current) select.value = current;
  }
}

// Countdowns (offer, SLA) tick once a second without re-rendering the whole ticket.
function tick() {
  const ticket = state.tickets.get(state.selected);
  if (!ticket) return;
  if (ticket.status === "assigned" && ticket.offer_expires_at) {
    const left = countdown(ticket.offer_expires_at);
    $("offer-countdown").textContent = left.seconds > 0 ? t("offerLeft") + left.text : t("expired");
    $("offer-countdown").dataset.seconds = String(left.seconds);
  } else {
    $("offer-countdown").textContent = "";
  }
  const sla = slaOf(ticket);
  const node = $("t-sla");
  node.dataset.state = sla ? sla.type : "";
  if (!sla) { node.textContent = "–"; return; }
  const label = t(sla.type === "sla_breached" ? "slaBreached" : "slaWarning");
  if (!sla.due_at) { node.textContent = label; return; }
  const left = countdown(sla.due_at);
  node.textContent = label + " · " + (left.seconds >= 0 ? t("dueIn") : t("overdue")) + left.text;
}

function formatTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

// -- actions --------------------------------------------------------------------------------

async function act(path, body, id = state.selected) {
  if (!id) return null;
  $("action-error").textContent = "";
  try {
    const result = await api("POST", "/api/tickets/" + encodeURIComponent(id) + path, body);
    if (result.ticket) upsert(result.ticket, false);
    return result;
  } catch (error) {
    $("action-error").textContent = t("failed") + error.message;
    return null;
  }
}

function newClientId() {
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
    state.replyDraft = { ticketId: state.selected, text, clientReplyId: newClientId() };
  }
  const result = await act("/reply", { text, client_reply_id: state.replyDraft.clientReplyId });
  if (result) {
    box.value = "";
    state.replyDraft = null;
  }
  $("reply-send").disabled = false;
}

async function onNote(event) {
  event.preventDefault();
  const box = $("note-text");
  const text = box.value.trim();
  if (!text) return;
  const draft = state.noteDraft;
  if (!draft || draft.ticketId !== state.selected || draft.text !== text) {
    state.noteDraft = { ticketId: state.selected, text, id: newClientId() };
  }
  if (await act("/notes", { text, client_note_id: state.noteDraft.id })) { box.value = ""; state.noteDraft = null; }
}

function target(value) {
  const [kind, id] = [value.slice(0, value.indexOf(":")), value.slice(value.indexOf(":") + 1)];
  return kind === "agent" ? { to_agent_id: id } : { to_group: id };
}

async function onTransfer(event) {
  event.preventDefault();
  const reason = $("transfer-reason").value.trim();
  if (!$("transfer-target").value) return;
  if (await act("/transfer", { ...target($("transfer-target").value), reason })) $("transfer-reason").value = "";
}

async function onDecline() {
  const id = state.selected;
  if (!id) return;
  $("action-error").textContent = "";
  try {
    await api("POST", "/api/tickets/" + encodeURIComponent(id) + "/decline", { reason: $("decline-reason").value.trim() });
    $("decline-reason").value = "";
    drop(id, "declined");
  } catch (error) {
    $("action-error").textContent = t("failed") + error.message;
  }
}

async function onShowDecisions() {
  const id = state.selected;
  if (state.decisions) { state.decisions = null; renderDecisions(); return; }
  try {
    state.decisions = (await api("GET", "/api/tickets/" + encodeURIComponent(id) + "/decisions")).decisions;
    if (state.selected === id) renderDecisions();
  } catch (error) {
    $("action-error").textContent = t("failed") + error.message;
  }
}

// -- supervisor view ------------------------------------------------------------------------

function scheduleBoard() {
  if (state.tab !== "supervisor" || state.boardTimer) return;
  // Several events come together (assigned + queued + presence): one refresh for the burst.
  state.boardTimer = setTimeout(() => { state.boardTimer = null; loadBoard(); }, 250);
}

async function loadBoard() {
  if (!state.me || state.me.role !== "supervisor") return;
  try {
    state.board = await api("GET", "/api/supervisor/overview");
    state.board.loadedAt = Date.now();
    renderBoard();
  } catch (error) {
    $("sv-result").textContent = t("failed") + error.message;
  }
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) { const td = el("td"); td.append(cell instanceof Node ? cell : document.createTextNode(String(cell))); tr.append(td); }
  return tr;
}

function duration(seconds) {
  const abs = Math.abs(seconds);
  return (seconds < 0 ? "-" : "") + (abs >= 3600 ? Math.floor(abs / 3600) + "h " : "") + Math.floor((abs % 3600) / 60) + "m " + (abs % 60) + "s";
}

function renderBoard() {
  const board = state.board;
  if (!board) return;
  const since = Math.round((Date.now() - board.loadedAt) / 1000);
  const queues = $("sv-queues").tBodies[0];
  queues.replaceChildren(...board.queues.map((q) => {
    const tr = row([q.skill, q.count, duration(q.oldest_wait_seconds + since),
      Object.entries(q.by_priority).map(([p, n]) => p + "×" + n).join(" "), q.tickets.map((x) => x.ticket_id).join(", ")]);
    tr.dataset.skill = q.skill;
    return tr;
  }));
  const agents = $("sv-agents").tBodies[0];
  agents.replaceChildren(...board.agents.map((a) => {
    const load = Object.entries(a.load).map(([ch, n]) => t("ch_" + ch) + " " + n + (a.capacity[ch] ? "/" + a.capacity[ch] : "")).join(" · ") || "0";
    const tr = row([a.name + " (" + a.agent_id + ")", t(a.presence), load, a.offers]);
    tr.dataset.agentId = a.agent_id;
    tr.dataset.presence = a.presence;
    return tr;
  }));
  const risk = $("sv-risk").tBodies[0];
  risk.replaceChildren(...board.sla_risk.map((r) => {
    const tr = row([r.ticket_id + " · " + r.subject, t("st_" + r.status), r.agent_id || "–",
      t(r.sla_state === "breached" ? "slaBreached" : "slaWarning"), duration(r.seconds_left - since)]);
    tr.dataset.ticketId = r.ticket_id;
    tr.dataset.state = r.sla_state;
    tr.addEventListener("click", () => { $("sv-ticket").value = r.ticket_id; });
    return tr;
  }));
  $("sv-decisions").replaceChildren(...board.decisions.map((d) => el("li", null,
    formatTime(d.at) + " · " + d.ticket_id + " · " + (d.outcome === "assigned" ? t("assignedOutcome") + d.agent_id : t("queuedOutcome"))
    + " · " + d.decision.reason)));
}

async function onReassign(event) {
  event.preventDefault();
  const id = $("sv-ticket").value.trim();
  const reason = $("sv-reason").value.trim();
  if (!id || !reason || !$("sv-target").value) return;
  try {
    await api("POST", "/api/tickets/" + encodeURIComponent(id) + "/reassign", { ...target($("sv-target").value), reason });
    $("sv-result").textContent = t("requested") + " · " + id;
    $("sv-reason").value = "";
  } catch (error) {
    $("sv-result").textContent = t("failed") + error.message;
  }
}

// -- reports --------------------------------------------------------------------------------
// Charts are SVG built node by node (createElementNS + textContent): skill and group names come
// from files people edit, so nothing here is parsed as markup.

const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 360, height: 190, left: 34, right: 8, top: 18, bottom: 34 };

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function isoDay(date) {
  return date.getFullYear() + "-" + String(date.getMonth() + 1).padStart(2, "0") + "-" + String(date.getDate()).padStart(2, "0");
}

async function loadReport() {
  if (!state.me || state.me.role !== "supervisor") return;
  if (!$("rp-to").value) {
    const today = new Date();
    $("rp-to").value = isoDay(today);
    $("rp-from").value = isoDay(new Date(today.getFullYear(), today.getMonth(), today.getDate() - 6));
  }
  const params = new URLSearchParams({ from: $("rp-from").value, to: $("rp-to").value, by: $("rp-by").value });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;  // days as the supervisor sees them
  if (zone) params.set("tz", zone);
  $("rp-error").textContent = "";
  try {
    state.report = await api("GET", "/api/v1/reports?" + params.toString());
    renderReport();
    $("reports-view").dataset.loaded = String(Date.now());
  } catch (error) {
    $("rp-error").textContent = t("failed") + error.message;
  }
}

function seconds(value) {
  return value === null || value === undefined ? "–" : duration(Math.round(value));
}

function percent(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + "%";
}

function span(value) {
  return value % 3600 === 0 ? [value / 3600, t("hour")] : [value / 60, t("minute")];
}

// A bucket's label, short enough for its bar: "<1m", "1–5m", "15m–1h", "≥24h" ("1–5分", "15分–1小时").
function bucketLabel(from, to) {
  if (from === 0) return "<" + span(to).join("");
  if (to === null) return "≥" + span(from).join("");
  const [lo, loUnit] = span(from);
  const [hi, hiUnit] = span(to);
  return loUnit === hiUnit ? lo + "–" + hi + hiUnit : lo + loUnit + "–" + hi + hiUnit;
}

function rowKey(by, key) {
  if (key === null) return by === "agent" ? t("unassigned") : by === "group" ? t("noGroup") : "–";
  return by === "channel" ? t("ch_" + key) : key;
}

function renderReport() {
  const report = state.report;
  if (!report) return;
  const totals = report.totals;
  const kpis = [
    ["kpiTickets", "tickets", totals.tickets],
    ["kpiFrt", "frt", seconds(totals.first_response.p50_seconds) + " / " + seconds(totals.first_response.p90_seconds)],
    ["kpiRes", "resolution", seconds(totals.resolution.p50_seconds) + " / " + seconds(totals.resolution.p90_seconds)],
    ["kpiSla", "sla", percent(totals.sla.attainment)],
    ["kpiBreaches", "breaches", totals.breaches.total + " / " + totals.escalations],
    ["kpiCsat", "csat", totals.csat.average === null ? "–" : totals.csat.average.toFixed(2) + " (" + totals.csat.count + ")"],
  ];
  $("rp-totals").replaceChildren(...kpis.map(([label, key, value]) => {
    const item = el("div", "kpi");
    const dd = el("dd", null, value);
    dd.dataset.kpi = key;
    item.append(el("dt", null, t(label)), dd);
    return item;
  }));
  const by = report.period.by;
  $("rp-key").dataset.i18n = "col_" + by;
  $("rp-key").textContent = t("col_" + by);
  $("rp-rows").tBodies[0].replaceChildren(...report.rows.map((r) => {
    const tr = row([rowKey(by, r.key), r.tickets, r.resolved, seconds(r.first_response.p50_seconds),
      seconds(r.first_response.p90_seconds), seconds(r.resolution.p50_seconds), seconds(r.resolution.p90_seconds),
      percent(r.sla.attainment), r.breaches.total, r.escalations,
      r.csat.average === null ? "–" : r.csat.average.toFixed(2) + " (" + r.csat.count + ")"]);
    tr.dataset.key = r.key === null ? "" : r.key;
    return tr;
  }));
  lineChart($("chart-sla"), t("chartSla"), report.sla_by_day.map((d) => ({
    key: d.day, label: d.day.slice(5), value: d.attainment, title: d.day + ": " + percent(d.attainment) + " (" + d.met + "/" + (d.met + d.breached) + ")" })));
  barChart($("chart-response"), t("chartResponse"), report.response_time_distribution.map((b) => ({
    key: String(b.from_seconds), label: bucketLabel(b.from_seconds, b.to_seconds), value: b.count })));
  barChart($("chart-backlog"), t("chartBacklog"), report.backlog_by_skill.map((b) => ({
    key: b.skill, label: b.skill, value: b.open,
    title: b.skill + ": " + b.open + t("ticketsUnit") + " · " + Object.entries(b.by_channel).map(([c, n]) => t("ch_" + c) + " " + n).join(", ") })));
  barChart($("chart-csat"), t("chartCsat"), Object.entries(totals.csat.distribution).map(([score, n]) => ({
    key: score, label: score + "★", value: n })));
}

function chartFrame(title) {
  const frame = svg("svg", { viewBox: "0 0 " + CHART.width + " " + CHART.height, role: "img", class: "chart-svg" });
  frame.setAttribute("aria-label", title);
  const base = CHART.height - CHART.bottom;
  frame.append(svg("line", { class: "axis", x1: CHART.left, y1: base, x2: CHART.width - CHART.right, y2: base }));
  return frame;
}

function barChart(container, title, items) {
  const frame = chartFrame(title);
  const base = CHART.height - CHART.bottom;
  const room = base - CHART.top;
  if (!items.length) {
    frame.append(svg("text", { x: CHART.width / 2, y: CHART.height / 2, "text-anchor": "middle", class: "empty" }, t("noData")));
    container.replaceChildren(frame);
    return;
  }
  const max = Math.max(1, ...items.map((i) => i.value));
  frame.append(svg("text", { x: CHART.left - 4, y: CHART.top + 4, "text-anchor": "end" }, max));
  const slot = (CHART.width - CHART.left - CHART.right) / items.length;
  const width = Math.min(36, slot * 0.7);
  items.forEach((item, i) => {
    const height = room * item.value / max;
    const x = CHART.left + slot * i + (slot - width) / 2;
    const bar = svg("g", { class: "bar" });
    bar.dataset.key = item.key;
    bar.dataset.value = String(item.value);
    bar.append(svg("title", null, item.title || item.label + ": " + item.value),
      svg("rect", { x: x.toFixed(1), y: (base - height).toFixed(1), width: width.toFixed(1), height: height.toFixed(1) }),
      svg("text", { x: (x + width / 2).toFixed(1), y: (base - height - 4).toFixed(1), "text-anchor": "middle", class: "value" }, item.value),
      svg("text", { x: (x + width / 2).toFixed(1), y: base + 14, "text-anchor": "middle", class: "label" },
        item.label.length > 12 ? item.label.slice(0, 11) + "…" : item.label));
    frame.append(bar);
  });
  container.replaceChildren(frame);
}

function lineChart(container, title, points) {
  const frame = chartFrame(title);
  const base = CHART.height - CHART.bottom;
  const room = base - CHART.top;
  for (const level of [0, 50, 100]) {
    const y = base - room * level / 100;
    if (level) frame.append(svg("line", { class: "grid", x1: CHART.left, y1: y, x2: CHART.width - CHART.right, y2: y }));
    frame.append(svg("text", { x: CHART.left - 4, y: y + 3, "text-anchor": "end" }, level + "%"));
  }
  const slot = (CHART.width - CHART.left - CHART.right) / Math.max(1, points.length);
  const every = Math.max(1, Math.ceil(points.length / 7));
  let segment = [];
  const flush = () => {
    if (segment.length > 1) frame.append(svg("polyline", { class: "line", points: segment.join(" ") }));
    segment = [];
  };
  points.forEach((p, i) => {
    const x = CHART.left + slot * (i + 0.5);
    if (i % every === 0) frame.append(svg("text", { x: x.toFixed(1), y: base + 14, "text-anchor": "middle", class: "label" }, p.label));
    if (p.value === null) { flush(); return; }
    const y = base - room * p.value / 100;
    segment.push(x.toFixed(1) + "," + y.toFixed(1));
    const dot = svg("circle", { class: "point", cx: x.toFixed(1), cy: y.toFixed(1), r: 3.5 });
    dot.dataset.key = p.key;
    dot.dataset.value = String(p.value);
    dot.append(svg("title", null, p.title));
    frame.append(dot);
  });
  flush();
  if (!points.some((p) => p.value !== null)) {
    frame.append(svg("text", { x: CHART.width / 2, y: CHART.height / 2, "text-anchor": "middle", class: "empty" }, t("noData")));
  }
  container.replaceChildren(frame);
}

// -- a short chime for new work (WebAudio; browsers allow it after the first click) -----------

function unlockAudio() {
  if (state.audio || !window.AudioContext) return;
  try { state.audio = new AudioContext(); } catch (_) { state.audio = null; }
}

function beep() {
  window.__tmBeeps = (window.__tmBeeps || 0) + 1;  // tests count chimes; the sound itself is a nicety
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
  $("decline").addEventListener("click", onDecline);
  $("resolve").addEventListener("click", () => act("/resolve"));
  $("reopen").addEventListener("click", () => act("/reopen"));
  $("t-work-status").addEventListener("change", (event) => act("/status", { status: event.target.value }));
  $("show-decisions").addEventListener("click", onShowDecisions);
  $("reply-form").addEventListener("submit", onReply);
  $("note-form").addEventListener("submit", onNote);
  $("transfer-form").addEventListener("submit", onTransfer);
  $("reassign-form").addEventListener("submit", onReassign);
  $("tab-console").addEventListener("click", () => showTab("console"));
  $("tab-supervisor").addEventListener("click", () => showTab("supervisor"));
  $("tab-reports").addEventListener("click", () => showTab("reports"));
  $("report-form").addEventListener("submit", (event) => { event.preventDefault(); loadReport(); });
  $("lang-toggle").addEventListener("click", () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    localStorage.setItem("tm.lang", state.lang);
    applyLabels();
  });
  setInterval(() => { tick(); if (state.tab === "supervisor") renderBoard(); }, 1000);
  setInterval(() => { if (state.tab === "supervisor") loadBoard(); }, 15000);  // in case a hint was missed
  applyLabels();
  try {
    showConsole(await api("GET", "/api/me"));
  } catch (_) {
    showLogin();
  }
});
