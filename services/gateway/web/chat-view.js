// The conversation list and the open chat: live messages, typing, receipts, presence.
// State lives in plain Maps keyed by seq, so a message shown twice is impossible
// whatever order history, replay and live frames arrive in.

const $ = (selector) => document.querySelector(selector);
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOW_MS = 4000;

function convId(c) {
  return c.conversation_id || c.id;
}

function msgId(m) {
  return m.message_id || m.id;
}

function shortId(id) {
  return id ? String(id).slice(0, 8) : "";
}

function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function formatLastSeen(iso) {
  if (!iso) return "offline";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "offline";
  const sameDay = d.toDateString() === new Date().toDateString();
  return `last seen ${sameDay ? formatTime(iso) : d.toLocaleString()}`;
}

function unreadOf(c) {
  return Number(c.unread_count ?? c.unread ?? 0);
}

/** The other participant's read position, from whichever shape the server sent. */
function peerReadSeq(c, me) {
  if (c.peer_read_seq != null) return Number(c.peer_read_seq);
  if (c.other_read_seq != null) return Number(c.other_read_seq);
  if (c.read_seq && typeof c.read_seq === "object") {
    const other = Object.entries(c.read_seq).filter(([uid]) => uid !== me);
    return other.length ? Math.max(...other.map(([, s]) => Number(s) || 0)) : 0;
  }
  if (Array.isArray(c.participants)) {
    const other = c.participants.filter((p) => (p.user_id || p.id) !== me);
    return other.length ? Math.max(...other.map((p) => Number(p.last_read_seq ?? p.read_seq ?? 0))) : 0;
  }
  return 0;
}

export class ChatView {
  constructor({ api, socket, auth, showError, showNotice }) {
    this.api = api;
    this.socket = socket;
    this.auth = auth;
    this.showError = showError;
    this.showNotice = showNotice;
    this.me = null;
    this.isAdmin = false;
    this.conversations = new Map(); // id -> conversation
    this.messages = new Map(); // id -> Map(seq -> message)
    this.loaded = new Set(); // conversations whose history is loaded
    this.pendingByClient = new Map(); // client_id -> {conversation_id, body, failed}
    this.peerRead = new Map(); // conversation id -> peer's read seq
    this.presence = new Map(); // user id -> {state, last_seen}
    this.names = new Map(); // user id -> display name
    this.current = null;
    this.typingTimer = null;
    this.lastTypingSent = 0;
    this._bindDom();
    this._bindSocket();
  }

  _bindDom() {
    this.list = $("#conversation-list");
    this.listEmpty = $("#conversation-empty");
    this.chat = $("#chat");
    this.placeholder = $("#chat-placeholder");
    this.messagesEl = $("#messages");
    this.typingEl = $("#typing");
    this.presenceEl = $("#presence");
    this.composer = $("#composer-input");

    $("#new-conversation-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this._guard(() => this._openNew(e.target));
    });
    $("#status-filter").addEventListener("change", () => this._guard(() => this.refreshList()));
    $("#assignee-filter").addEventListener("change", () => this._guard(() => this.refreshList()));
    $("#composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this._send();
    });
    this.composer.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        this._send();
      }
    });
    this.composer.addEventListener("input", () => this._typing());
    $("#assign-me").addEventListener("click", () =>
      this._guard(async () => this._updated(await this.api.assign(this.current, this.me))),
    );
    $("#assign-other").addEventListener("change", (e) => {
      const adminId = e.target.value;
      e.target.value = "";
      if (adminId) this._guard(async () => this._updated(await this.api.assign(this.current, adminId)));
    });
    $("#set-status").addEventListener("change", (e) =>
      this._guard(async () => this._updated(await this.api.setStatus(this.current, e.target.value))),
    );
    $("#close-conversation").addEventListener("click", () =>
      this._guard(async () => this._updated(await this.api.close(this.current))),
    );
    $("#load-older").addEventListener("click", () => this._guard(() => this._loadOlder()));
    document.addEventListener("visibilitychange", () => this._markReadIfVisible());
  }

  _bindSocket() {
    const s = this.socket;
    s.addEventListener("message", (e) => this._onMessage(e.detail));
    s.addEventListener("message.updated", (e) => this._onMessage(e.detail, true));
    s.addEventListener("read", (e) => this._onRead(e.detail));
    s.addEventListener("typing", (e) => this._onTyping(e.detail));
    s.addEventListener("presence", (e) => this._onPresence(e.detail));
    s.addEventListener("conversation", (e) => this._updated(e.detail));
    s.addEventListener("gap", (e) => this._guard(() => this._fill(e.detail.conversation_id, e.detail.after)));
    s.addEventListener("reload", (e) => this._guard(() => this._reload(e.detail.conversation_id)));
    s.addEventListener("state", (e) => {
      if (e.detail.state === "open") this._markReadIfVisible();
    });
  }

  async _guard(fn) {
    try {
      await fn();
    } catch (err) {
      this.showError(err);
    }
  }

  reset() {
    this.conversations.clear();
    this.messages.clear();
    this.loaded.clear();
    this.pendingByClient.clear();
    this.peerRead.clear();
    this.current = null;
    this.list.replaceChildren();
    this.messagesEl.replaceChildren();
    this.chat.hidden = true;
    this.placeholder.hidden = false;
  }

  async start(user) {
    this.reset();
    this.me = user && (user.id || user.user_id);
    this.isAdmin = Boolean(user && user.role === "ADMIN");
    if (this.me) this.names.set(this.me, "You");
    $("#user-tools").hidden = this.isAdmin;
    $("#admin-tools").hidden = !this.isAdmin;
    $("#admin-controls").hidden = !this.isAdmin;
    document.body.dataset.view = this.isAdmin ? "admin" : "user";
    await this._guard(() => this.refreshList());
    if (this.isAdmin) await this._guard(() => this._loadAdmins());
  }

  async _loadAdmins() {
    const admins = await this.auth.listUsers({ role: "ADMIN", limit: 200 });
    const options = [new Option("Reassign to…", "")];
    for (const a of admins) {
      if (a.id === this.me) continue;
      this.names.set(a.id, a.display_name || a.username);
      options.push(new Option(a.display_name || a.username, a.id));
    }
    $("#assign-other").replaceChildren(...options);
    $("#assign-other").hidden = options.length < 2;
  }

  async refreshList() {
    let items;
    if (this.isAdmin) {
      const status = $("#status-filter").value;
      const assignee = $("#assignee-filter").value;
      items = await this.api.inbox({ status, assignee });
    } else {
      items = await this.api.conversations();
    }
    this.visible = new Set(items.map(convId));
    for (const c of items) this._remember(c);
    this._renderList();
  }

  _remember(c) {
    const id = convId(c);
    const merged = { ...(this.conversations.get(id) || {}), ...c };
    this.conversations.set(id, merged);
    const read = peerReadSeq(merged, this.me);
    if (read > (this.peerRead.get(id) || 0)) this.peerRead.set(id, read);
    for (const key of ["user_name", "username", "user_display_name"]) if (c[key] && c.user_id) this.names.set(c.user_id, c[key]);
    for (const key of ["admin_name", "admin_display_name"]) if (c[key] && c.admin_id) this.names.set(c.admin_id, c[key]);
    if (c.counterpart_id && c.counterpart_name) this.names.set(c.counterpart_id, c.counterpart_name);
    if (c.counterpart_id && c.counterpart_presence && !this.presence.has(c.counterpart_id)) {
      this.presence.set(c.counterpart_id, { state: c.counterpart_presence });
    }
    if (c.presence && typeof c.presence === "object") {
      for (const [uid, p] of Object.entries(c.presence)) this.presence.set(uid, p);
    }
    // Resume from what the list says we have seen, so a reconnect replays only the news.
    if (!this.loaded.has(id) && c.last_seq != null) this.socket.track(id, Number(c.last_seq));
    return merged;
  }

  _peerOf(c) {
    if (!c) return null;
    if (c.counterpart_id) return c.counterpart_id;
    return this.isAdmin ? c.user_id : c.admin_id;
  }

  _nameOf(uid, fallback) {
    if (!uid) return fallback;
    return this.names.get(uid) || `${fallback} ${shortId(uid)}`;
  }

  _renderList() {
    const items = [...this.conversations.values()]
      .filter((c) => !this.visible || this.visible.has(convId(c)))
      .sort((a, b) => String(b.last_activity_at || b.updated_at || "").localeCompare(String(a.last_activity_at || a.updated_at || "")));
    const rows = items.map((c) => {
      const id = convId(c);
      const li = document.createElement("li");
      li.dataset.testid = "conversation-item";
      li.dataset.id = id;
      li.dataset.status = c.status || "";
      li.classList.toggle("active", id === this.current);
      const subject = document.createElement("span");
      subject.className = "subject";
      subject.textContent = c.subject || "(no subject)";
      const unread = document.createElement("span");
      unread.className = "unread";
      unread.dataset.testid = "unread";
      const count = id === this.current ? 0 : unreadOf(c);
      unread.dataset.count = String(count);
      unread.textContent = String(count);
      const preview = document.createElement("span");
      preview.className = "preview";
      const last = c.last_message && (c.last_message.body ?? c.last_message);
      preview.textContent = typeof last === "string" ? last : c.last_message_preview || "";
      const meta = document.createElement("span");
      meta.className = "meta";
      const who = this.isAdmin ? this._nameOf(c.user_id, "user") : c.admin_id ? this._nameOf(c.admin_id, "admin") : "unassigned";
      meta.textContent = `${c.status || ""} · ${who}`;
      li.append(subject, unread, preview, meta);
      li.addEventListener("click", () => this._guard(() => this.open(id)));
      return li;
    });
    this.list.replaceChildren(...rows);
    this.listEmpty.hidden = rows.length > 0;
  }

  async _openNew(form) {
    const data = new FormData(form);
    const subject = String(data.get("subject")).trim();
    const body = String(data.get("body") || "").trim();
    const created = await this.api.openConversation({ subject, body });
    form.reset();
    const c = this._remember(created.conversation || created);
    this.visible = this.visible || new Set();
    this.visible.add(convId(c));
    this._renderList();
    await this.open(convId(c));
    this.showNotice("Consultation started");
  }

  _store(cid) {
    if (!this.messages.has(cid)) this.messages.set(cid, new Map());
    return this.messages.get(cid);
  }

  /**
   * Keep a message (by seq, so twice is impossible). `track` moves the socket's resume
   * position: right for history pages (contiguous) and delivered frames, wrong for an
   * ack — our seq 7 can be acked before the other side's seq 6 is delivered, and a
   * position at 7 would make the socket drop 6 as already seen.
   */
  _add(message, { track = true } = {}) {
    const cid = message.conversation_id;
    const store = this._store(cid);
    const existing = store.get(message.seq);
    store.set(message.seq, existing ? { ...existing, ...message } : message);
    if (message.client_id) this.pendingByClient.delete(message.client_id);
    if (track) this.socket.track(cid, message.seq);
  }

  async open(id) {
    this.current = id;
    const c = this.conversations.get(id) || this._remember(await this.api.conversation(id));
    if (!this.loaded.has(id)) {
      const page = await this.api.messages(id, { limit: 100 });
      for (const m of page) this._add({ conversation_id: id, ...m });
      this.loaded.add(id);
      $("#load-older").hidden = !(page.length && Math.min(...page.map((m) => m.seq)) > 1);
      // The socket may have missed messages between the list and this page: ask for the gap.
      await this._fill(id, Math.max(0, ...this._store(id).keys()));
    }
    this.chat.hidden = false;
    this.placeholder.hidden = true;
    this._renderHeader(c);
    this._renderMessages();
    this._renderList();
    this._markReadIfVisible();
    this.composer.focus();
  }

  async _fill(id, after) {
    if (!this.loaded.has(id)) return;
    let cursor = after;
    for (let i = 0; i < 20; i += 1) {
      const page = await this.api.messages(id, { after: cursor, limit: 100 });
      for (const m of page) this._add({ conversation_id: id, ...m });
      if (page.length < 100) break;
      cursor = Math.max(...page.map((m) => m.seq));
    }
    if (id === this.current) this._renderMessages();
  }

  async _reload(id) {
    this.messages.delete(id);
    this.loaded.delete(id);
    if (id === this.current) await this.open(id);
  }

  async _loadOlder() {
    const id = this.current;
    const seqs = [...this._store(id).keys()];
    if (!seqs.length) return;
    const page = await this.api.messages(id, { before: Math.min(...seqs), limit: 100 });
    for (const m of page) this._add({ conversation_id: id, ...m });
    $("#load-older").hidden = !(page.length && Math.min(...page.map((m) => m.seq)) > 1);
    this._renderMessages(false);
  }

  _renderHeader(c) {
    $("#chat-subject").textContent = c.subject || "(no subject)";
    $("#chat-status").textContent = c.status || "";
    $("#chat-status").dataset.status = c.status || "";
    $("#set-status").value = c.status || "OPEN";
    const peer = this._peerOf(c);
    $("#peer-name").textContent = peer
      ? this._nameOf(peer, this.isAdmin ? "user" : "administrator")
      : "waiting for an administrator";
    $("#assign-me").disabled = c.admin_id === this.me;
    this._renderPresence();
  }

  _renderPresence() {
    const c = this.conversations.get(this.current);
    const peer = this._peerOf(c);
    const p = (peer && this.presence.get(peer)) || { state: "offline" };
    this.presenceEl.dataset.state = p.state;
    this.presenceEl.textContent = p.state === "offline" ? formatLastSeen(p.last_seen) : p.state;
  }

  _receipt(m, peerRead) {
    if (m.pending) return m.failed ? ["failed", "not sent"] : ["pending", "…"];
    return m.seq <= peerRead ? ["read", "✓✓"] : ["sent", "✓"];
  }

  _renderMessages(stickToBottom = true) {
    const id = this.current;
    if (!id) return;
    const peerRead = this.peerRead.get(id) || 0;
    const stored = [...this._store(id).values()].sort((a, b) => a.seq - b.seq);
    const pending = [...this.pendingByClient.entries()]
      .filter(([, p]) => p.conversation_id === id)
      .map(([clientId, p]) => ({ client_id: clientId, body: p.body, sender_id: this.me, pending: true, failed: p.failed }));
    const nodes = [...stored, ...pending].map((m) => {
      const li = document.createElement("li");
      const mine = m.sender_id === this.me;
      li.className = "msg";
      li.classList.toggle("mine", mine);
      li.dataset.testid = "message";
      if (m.seq != null) li.dataset.seq = String(m.seq);
      if (m.client_id) li.dataset.clientId = m.client_id;
      li.dataset.mine = String(mine);
      const body = document.createElement("div");
      body.className = "body";
      if (m.deleted_at) {
        li.classList.add("deleted");
        body.textContent = "message deleted";
      } else {
        body.textContent = m.body;
      }
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = `${formatTime(m.created_at)}${m.edited_at && !m.deleted_at ? " · edited" : ""}`;
      if (mine) {
        const [state, text] = this._receipt(m, peerRead);
        const receipt = document.createElement("span");
        receipt.className = "receipt";
        receipt.dataset.testid = "receipt";
        receipt.dataset.state = state;
        receipt.textContent = text;
        li.classList.toggle("failed", state === "failed");
        meta.append(receipt);
        if (state === "failed") {
          const retry = document.createElement("button");
          retry.type = "button";
          retry.className = "link";
          retry.dataset.testid = "retry";
          retry.textContent = "Retry";
          retry.addEventListener("click", () => this._dispatch(this.current, m.body, m.client_id));
          meta.append(retry);
        }
      }
      li.append(body, meta);
      return li;
    });
    const atBottom = this.messagesEl.scrollHeight - this.messagesEl.scrollTop - this.messagesEl.clientHeight < 40;
    this.messagesEl.replaceChildren(...nodes);
    if (stickToBottom || atBottom) this.messagesEl.scrollTop = this.messagesEl.scrollHeight;
  }

  _send() {
    const body = this.composer.value.trim();
    const id = this.current;
    if (!body || !id) return;
    this.composer.value = "";
    const clientId = crypto.randomUUID();
    this._dispatch(id, body, clientId);
  }

  /** Send (or re-send, with the same client_id, so the store keeps one copy) and track the outcome. */
  _dispatch(id, body, clientId) {
    this.pendingByClient.set(clientId, { conversation_id: id, body });
    this._renderMessages();
    this.socket.send(id, body, clientId).then(
      (message) => {
        if (message && message.seq != null) {
          const { type: _frameType, ref: _ref, duplicate: _duplicate, ...stored } = message;
          this._add({ conversation_id: id, body, sender_id: this.me, client_id: clientId, ...stored }, { track: false });
        }
        this.pendingByClient.delete(clientId);
        if (id === this.current) this._renderMessages();
      },
      (err) => {
        if (err.code === "closed") return; // signed out: nothing left to show
        const p = this.pendingByClient.get(clientId);
        if (p) p.failed = true;
        if (id === this.current) this._renderMessages();
        this.showError(new Error(`Message not sent: ${err.message}${err.code ? ` (${err.code})` : ""}`));
      },
    );
  }

  _typing() {
    const now = Date.now();
    if (!this.current || now - this.lastTypingSent < TYPING_SEND_EVERY_MS) return;
    this.lastTypingSent = now;
    this.socket.typing(this.current);
  }

  _onMessage(message, updated = false) {
    const cid = message.conversation_id;
    if (!this.conversations.has(cid)) {
      // A consultation we have not listed yet (new, or just assigned to us).
      this._guard(() => this.refreshList());
    }
    if (this.loaded.has(cid)) this._add(message);
    const c = this.conversations.get(cid);
    if (c && !updated) {
      c.last_message = { body: message.body };
      c.last_activity_at = message.created_at || new Date().toISOString();
      c.last_seq = Math.max(Number(c.last_seq || 0), message.seq);
      if (message.sender_id !== this.me && cid !== this.current) c.unread_count = unreadOf(c) + 1;
    }
    if (message.sender_id !== this.me && cid === this.current) this._hideTyping();
    if (cid === this.current) {
      this._renderMessages();
      this._markReadIfVisible();
    }
    this._renderList();
  }

  _onRead(read) {
    const cid = read.conversation_id;
    const reader = read.reader_id || read.user_id;
    if (reader === this.me) {
      const c = this.conversations.get(cid);
      if (c) c.unread_count = 0;
      this._renderList();
      return;
    }
    if (read.seq > (this.peerRead.get(cid) || 0)) this.peerRead.set(cid, read.seq);
    if (cid === this.current) this._renderMessages(false);
  }

  _onTyping(t) {
    const who = t.user_id || t.sender_id;
    if (t.conversation_id !== this.current || who === this.me) return;
    this.typingEl.textContent = `${this._nameOf(who, this.isAdmin ? "user" : "administrator")} is typing…`;
    this.typingEl.hidden = false;
    clearTimeout(this.typingTimer);
    this.typingTimer = setTimeout(() => this._hideTyping(), Number(t.expires_in_ms || TYPING_SHOW_MS));
  }

  _hideTyping() {
    clearTimeout(this.typingTimer);
    this.typingEl.hidden = true;
  }

  _onPresence(p) {
    this.presence.set(p.user_id, { state: p.state, last_seen: p.last_seen });
    if (this.current) this._renderPresence();
  }

  _updated(c) {
    if (!c) return;
    const merged = this._remember(c.conversation || c);
    const id = convId(merged);
    if (this.isAdmin && this.visible) {
      // Keep the inbox true to its filters as conversations change status or assignee.
      const status = $("#status-filter").value;
      const assignee = $("#assignee-filter").value;
      const statusOk = !status || merged.status === status;
      const assigneeOk = assignee === "me" ? merged.admin_id === this.me : assignee === "unassigned" ? !merged.admin_id : true;
      if (statusOk && assigneeOk) this.visible.add(id);
      else this.visible.delete(id);
    } else if (this.visible) {
      this.visible.add(id);
    }
    if (id === this.current) this._renderHeader(merged);
    this._renderList();
  }

  _markReadIfVisible() {
    const id = this.current;
    if (!id || document.visibilityState !== "visible") return;
    const seqs = [...this._store(id).keys()];
    if (!seqs.length) return;
    const top = Math.max(...seqs);
    const c = this.conversations.get(id);
    if (c && Number(c.my_read_seq ?? c.read_seq ?? 0) >= top) return;
    if (c) {
      c.my_read_seq = top;
      c.unread_count = 0;
    }
    if (!this.socket.markRead(id, top)) {
      this.api.markRead(id, top).catch(() => {
        if (c) c.my_read_seq = 0;
      });
    }
    this._renderList();
  }
}
