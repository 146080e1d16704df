// chat-client.js: a dependency-free ES module for the consultation chat.
//
// AuthClient  - register / login / logout, access-token refresh (single-flight,
//               ahead of expiry, and once more on a 401), profile, phone verification.
// ChatApi     - the gateway's REST routes, every call authorized through AuthClient.
// ChatSocket  - the gateway's WebSocket: reconnect with exponential backoff and
//               jitter, resume by last seen `seq` per conversation, de-duplication,
//               an outbox that re-sends unacked messages with the SAME client_id
//               (the store makes that idempotent), in-band token refresh.
//
// Copy it as is into any front end (Next.js included): it only needs fetch,
// WebSocket, EventTarget and crypto.randomUUID, all present in modern browsers.

/** A failed call, carrying the server's problem JSON (RFC 9457) when there was one. */
export class ApiError extends Error {
  constructor({ status = 0, title = "Request failed", detail = "", code = "", field = "", retryAfter = null, body = null } = {}) {
    super(detail || title);
    this.name = "ApiError";
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
    this.body = body;
  }

  /** A sentence a person can act on. */
  get userMessage() {
    if (this.status === 0) {
      const host = (this.detail.match(/https?:\/\/[^/\s]+/) || [""])[0];
      return `Cannot reach the server${host ? ` ${host}` : ""}. Check your connection and try again.`;
    }
    if (this.status === 429) {
      const wait = this.retryAfter ? ` Try again in ${this.retryAfter} s.` : " Try again later.";
      return `Too many attempts.${wait}`;
    }
    if (this.detail && this.detail !== this.title) return `${this.title}: ${this.detail}`;
    return this.field ? `${this.title} (${this.field})` : this.title;
  }
}

function fieldFromProblem(body) {
  if (!body || typeof body !== "object") return "";
  if (typeof body.field === "string") return body.field;
  const errors = body.errors || body.invalid_params || body.detail;
  if (Array.isArray(errors) && errors.length) {
    const first = errors[0];
    if (first && typeof first === "object") {
      if (typeof first.field === "string") return first.field;
      if (typeof first.name === "string") return first.name;
      if (Array.isArray(first.loc)) return first.loc.filter((p) => p !== "body").join(".");
    }
  }
  return "";
}

function detailFromProblem(body) {
  if (!body || typeof body !== "object") return "";
  const errors = body.errors || body.invalid_params || body.detail;
  if (Array.isArray(errors) && errors.length) {
    return errors
      .map((e) => {
        if (!e || typeof e !== "object") return String(e);
        const where = e.field || e.name || (Array.isArray(e.loc) ? e.loc.filter((p) => p !== "body").join(".") : "");
        const what = e.message || e.msg || e.reason || JSON.stringify(e);
        return where && !String(what).startsWith(where) ? `${where}: ${what}` : what;
      })
      .join("; ");
  }
  if (typeof body.detail === "string") return body.detail;
  if (typeof body.message === "string") return body.message;
  return "";
}

async function problemFrom(response) {
  let body = null;
  try {
    const text = await response.text();
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const retry = response.headers.get("Retry-After");
  return new ApiError({
    status: response.status,
    title: (body && (body.title || body.error)) || response.statusText || `HTTP ${response.status}`,
    detail: detailFromProblem(body),
    code: (body && (body.code || body.type)) || "",
    field: fieldFromProblem(body),
    retryAfter: retry ? Number(retry) : null,
    body,
  });
}

/** fetch + JSON + problem JSON mapping; network failures become ApiError(status 0). */
async function requestJson(fetchImpl, url, { method = "GET", body, headers = {}, credentials } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (credentials) init.credentials = credentials;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetchImpl(url, init);
  } catch (err) {
    throw new ApiError({ status: 0, title: "Network error", detail: `${method} ${url}: ${err && err.message ? err.message : err}` });
  }
  if (!response.ok) throw await problemFrom(response);
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Where tokens live between page loads; swap for memory or cookie-backed storage. */
export function webStorage(storage = globalThis.sessionStorage, key = "chat.session") {
  return {
    load() {
      try {
        return JSON.parse(storage.getItem(key) || "null");
      } catch {
        return null;
      }
    },
    save(value) {
      if (value == null) storage.removeItem(key);
      else storage.setItem(key, JSON.stringify(value));
    },
  };
}

export function memoryStorage() {
  let value = null;
  return { load: () => value, save: (v) => { value = v; } };
}

/**
 * Accounts and tokens against the auth service.
 *
 * mode "bearer" (default): tokens come in the JSON body; the access token is sent
 * as `Authorization: Bearer`, the refresh token kept in `storage`; both rotate on
 * every refresh. mode "cookie": auth keeps both tokens in httpOnly cookies that
 * scripts never see; requests carry the cookies (`credentials: "include"`) and the
 * CSRF token auth returned, as `X-CSRF-Token`. Events: "session" (detail: user or
 * null), "refreshed" (detail: the new access token, or null in cookie mode),
 * "expired" (refresh refused: the person must log in again).
 */
export class AuthClient extends EventTarget {
  constructor({
    baseUrl,
    mode = "bearer",
    storage = memoryStorage(),
    fetch: fetchImpl = globalThis.fetch.bind(globalThis),
    refreshMarginS = 60,
  } = {}) {
    super();
    this.baseUrl = String(baseUrl || "").replace(/\/$/, "");
    this.mode = mode === "cookie" ? "cookie" : "bearer";
    this.storage = storage;
    this.fetch = fetchImpl;
    this.refreshMarginS = refreshMarginS;
    // bearer: {user, access_token, refresh_token, expires_at, margin_ms}; cookie: {user, csrf_token, expires_at, margin_ms}
    this.session = storage.load();
    this._refreshing = null;
    this._timer = null;
    if (this.session) this._schedule();
  }

  get user() {
    return this.session ? this.session.user : null;
  }

  get loggedIn() {
    return Boolean(this.session && (this.session.refresh_token || this.session.csrf_token));
  }

  get cookieMode() {
    return this.mode === "cookie";
  }

  _url(path) {
    return `${this.baseUrl}${path}`;
  }

  /** Login, register and refresh: `?mode=cookie` asks auth to answer with cookies. */
  _sessionUrl(path) {
    return this._url(this.cookieMode ? `${path}?mode=cookie` : path);
  }

  /** fetch options for this mode: cookies and the CSRF header, or nothing extra. */
  _withCredentials(options = {}) {
    if (!this.cookieMode) return options;
    const headers = { ...(options.headers || {}) };
    if (this.session && this.session.csrf_token) headers["X-CSRF-Token"] = this.session.csrf_token;
    return { ...options, headers, credentials: "include" };
  }

  _store(tokens, user) {
    const expiresIn = Number(tokens.expires_in || 900);
    this.session = {
      user: user || tokens.user || (this.session && this.session.user) || null,
      access_token: tokens.access_token || null,
      refresh_token: tokens.refresh_token || (this.session && this.session.refresh_token) || null,
      csrf_token: tokens.csrf_token || null,
      expires_at: Date.now() + expiresIn * 1000,
      // Refresh ahead by the margin, but never more than a third of a short lifetime.
      margin_ms: Math.min(this.refreshMarginS * 1000, (expiresIn * 1000) / 3),
    };
    this.storage.save(this.session);
    this._schedule();
  }

  _schedule() {
    clearTimeout(this._timer);
    if (!this.session) return;
    const due = this.session.expires_at - this._margin() - Date.now();
    this._timer = setTimeout(() => {
      this.refresh().catch(() => {});
    }, Math.max(due, 1000));
  }

  _margin() {
    return this.session && this.session.margin_ms != null ? this.session.margin_ms : this.refreshMarginS * 1000;
  }

  _clear() {
    clearTimeout(this._timer);
    this.session = null;
    this.storage.save(null);
    this.dispatchEvent(new CustomEvent("session", { detail: null }));
  }

  async register({ username, password, email, phone, display_name }) {
    const body = { username, password };
    if (email) body.email = email;
    if (phone) body.phone = phone;
    if (display_name) body.display_name = display_name;
    const result = await requestJson(this.fetch, this._sessionUrl("/auth/register"), this._withCredentials({ method: "POST", body }));
    if (result && (result.access_token || result.csrf_token)) {
      this._store(result, result.user);
      this.dispatchEvent(new CustomEvent("session", { detail: this.user }));
    }
    return result;
  }

  async login(login, password) {
    const result = await requestJson(
      this.fetch,
      this._sessionUrl("/auth/login"),
      this._withCredentials({ method: "POST", body: { login, password } }),
    );
    this._store(result, result.user);
    this.dispatchEvent(new CustomEvent("session", { detail: this.user }));
    return this.user;
  }

  async logout() {
    const session = this.session;
    if (!session) return;
    const options = this.cookieMode
      ? this._withCredentials({ method: "POST" })
      : { method: "POST", headers: { Authorization: `Bearer ${session.access_token}` } };
    this._clear();
    try {
      await requestJson(this.fetch, this._url("/auth/logout"), options);
    } catch {
      // The local session is gone either way; the server revokes the family when it can.
    }
  }

  /** Rotate the refresh token; concurrent callers share one request. */
  refresh() {
    if (!this.session) return Promise.reject(new ApiError({ status: 401, title: "Not logged in" }));
    if (!this._refreshing) {
      // Cookie mode: the refresh cookie rides along (path-scoped to /auth/refresh) with the CSRF header.
      const options = this.cookieMode
        ? this._withCredentials({ method: "POST" })
        : { method: "POST", body: { refresh_token: this.session.refresh_token } };
      this._refreshing = requestJson(this.fetch, this._sessionUrl("/auth/refresh"), options)
        .then((result) => {
          this._store(result, result.user);
          this.dispatchEvent(new CustomEvent("refreshed", { detail: this.session.access_token }));
          return this.session.access_token;
        })
        .catch((err) => {
          // A network failure keeps the session (retry later); a refusal ends it.
          if (err.status === 400 || err.status === 401 || err.status === 403) {
            this._clear();
            this.dispatchEvent(new CustomEvent("expired", { detail: err }));
          } else {
            this._timer = setTimeout(() => this.refresh().catch(() => {}), 5000);
          }
          throw err;
        })
        .finally(() => {
          this._refreshing = null;
        });
    }
    return this._refreshing;
  }

  /** A valid access token, refreshed first when it expires within the margin. */
  async accessToken() {
    if (!this.session) throw new ApiError({ status: 401, title: "Not logged in" });
    if (this.session.expires_at - Date.now() < this._margin()) return this.refresh();
    return this.session.access_token;
  }

  /** fetch JSON as the logged-in person (bearer token or cookies); one refresh and retry on 401. */
  async authorized(url, options = {}) {
    const call = async (token) =>
      this.cookieMode
        ? requestJson(this.fetch, url, this._withCredentials(options))
        : requestJson(this.fetch, url, { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` } });
    const token = await this.accessToken();
    try {
      return await call(token);
    } catch (err) {
      if (err.status !== 401) throw err;
      return call(await this.refresh());
    }
  }

  async me() {
    const user = await this.authorized(this._url("/auth/me"));
    if (this.session) {
      this.session.user = user;
      this.storage.save(this.session);
    }
    return user;
  }

  async updateMe(patch) {
    const user = await this.authorized(this._url("/auth/me"), { method: "PATCH", body: patch });
    if (this.session) {
      this.session.user = user;
      this.storage.save(this.session);
    }
    return user;
  }

  /** Confirm an address with the token from the emailed link (no login needed). */
  verifyEmail(token) {
    return requestJson(this.fetch, this._url("/auth/email/verify"), { method: "POST", body: { token } });
  }

  resendEmailVerification() {
    return this.authorized(this._url("/auth/email/resend"), { method: "POST" });
  }

  forgotPassword(email) {
    return requestJson(this.fetch, this._url("/auth/password/forgot"), { method: "POST", body: { email } });
  }

  resetPassword(token, newPassword) {
    return requestJson(this.fetch, this._url("/auth/password/reset"), {
      method: "POST",
      body: { token, new_password: newPassword },
    });
  }

  /** Administrators only: users by role or a search over username, display name and email. */
  async listUsers({ role, q, limit = 50, offset = 0 } = {}) {
    const query = new URLSearchParams({ limit: String(limit), offset: String(offset) });
    if (role) query.set("role", role);
    if (q) query.set("q", q);
    const page = await this.authorized(this._url(`/users?${query}`));
    return page && Array.isArray(page.items) ? page.items : [];
  }

  startPhoneVerification(phone) {
    return this.authorized(this._url("/auth/phone/start"), { method: "POST", body: { phone } });
  }

  verifyPhone(phone, code) {
    return this.authorized(this._url("/auth/phone/verify"), { method: "POST", body: { phone, code } });
  }
}

/** The gateway's REST API (conversations, history, admin inbox). */
export class ChatApi {
  constructor({ baseUrl = "", auth }) {
    this.baseUrl = String(baseUrl).replace(/\/$/, "");
    this.auth = auth;
  }

  _call(path, options) {
    return this.auth.authorized(`${this.baseUrl}/api${path}`, options);
  }

  static _items(result) {
    if (Array.isArray(result)) return result;
    if (result && Array.isArray(result.items)) return result.items;
    if (result && Array.isArray(result.conversations)) return result.conversations;
    if (result && Array.isArray(result.messages)) return result.messages;
    return [];
  }

  /** My conversations (a user's own; an administrator's assigned ones), by activity. */
  async conversations(params = {}) {
    const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== ""));
    const qs = query.toString();
    return ChatApi._items(await this._call(`/conversations${qs ? `?${qs}` : ""}`));
  }

  /** The administrators' inbox, filtered by status (OPEN | PENDING | CLOSED) and assignee. */
  async inbox({ status, assignee } = {}) {
    const query = new URLSearchParams();
    if (status) query.set("status", status);
    if (assignee) query.set("assignee", assignee);
    const qs = query.toString();
    return ChatApi._items(await this._call(`/admin/conversations${qs ? `?${qs}` : ""}`));
  }

  conversation(id) {
    return this._call(`/conversations/${encodeURIComponent(id)}`);
  }

  /** Open a consultation; the client_id makes a retried request return the first one. */
  openConversation({ subject, body, clientId = newClientId() }) {
    const payload = { subject, client_id: clientId };
    if (body) payload.body = body;
    return this._call("/conversations", { method: "POST", body: payload });
  }

  /** History by seq cursor: `after` for newer, `before` for older; at most 100 per page. */
  async messages(id, { after, before, limit = 100 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (after != null) query.set("after", String(after));
    if (before != null) query.set("before", String(before));
    return ChatApi._items(await this._call(`/conversations/${encodeURIComponent(id)}/messages?${query}`));
  }

  sendMessage(id, { body, clientId }) {
    return this._call(`/conversations/${encodeURIComponent(id)}/messages`, {
      method: "POST",
      body: { body, client_id: clientId },
    });
  }

  markRead(id, seq) {
    return this._call(`/conversations/${encodeURIComponent(id)}/read`, { method: "POST", body: { seq } });
  }

  /** Change status, assignee (administrators) or subject: PATCH with only what changes. */
  updateConversation(id, changes) {
    return this._call(`/conversations/${encodeURIComponent(id)}`, { method: "PATCH", body: changes });
  }

  assign(id, adminId) {
    return this.updateConversation(id, { admin_id: adminId });
  }

  setStatus(id, status) {
    return this.updateConversation(id, { status });
  }

  close(id) {
    return this.setStatus(id, "CLOSED");
  }

  editMessage(messageId, body) {
    return this._call(`/messages/${encodeURIComponent(messageId)}`, { method: "PATCH", body: { body } });
  }

  deleteMessage(messageId) {
    return this._call(`/messages/${encodeURIComponent(messageId)}`, { method: "DELETE" });
  }

  async search(q, { conversationId } = {}) {
    const query = new URLSearchParams({ q });
    if (conversationId) query.set("conversation_id", conversationId);
    return ChatApi._items(await this._call(`/search?${query}`));
  }
}

// Input that shows a person is at the keyboard; a tab left open is reported idle by the gateway.
const ACTIVITY_EVENTS = ["keydown", "pointerdown", "pointermove", "wheel", "focus", "visibilitychange"];
const RECONNECT_CODES_AUTH = new Set([4001, 4401]); // the token expired on a live socket
const MAX_AUTH_FAILURES = 3;
// Error codes after which a message.send is simply tried again (with the same client_id).
const RETRYABLE_ERRORS = new Set(["unavailable", "rate_limited"]);

function newClientId() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") return globalThis.crypto.randomUUID();
  return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The live connection. Events (CustomEvent, payload in `detail`):
 *   "state"                {state: "connecting" | "open" | "reconnecting" | "offline" | "closed", attempt, delayMs}
 *   "message"              a new message, exactly once and in seq order per conversation
 *   "message.updated"      an edited or deleted message
 *   "read"                 {conversation_id, reader_id, seq}
 *   "typing"               {conversation_id, user_id}
 *   "presence"             {user_id, state, last_seen}
 *   "conversation"         a conversation's new state
 *   "ack"                  {client_id, message}
 *   "reload"               {conversation_id}: the gap was too large; reload the history
 *   "gap"                  {conversation_id, after, before}: fetch (after, before) over REST
 *   "error"                {code, message, client_id?}
 *   "frame"                every raw frame (debugging)
 *
 * Liveness: a quiet connection is pinged every `pingIntervalMs`; no answer within
 * `ackTimeoutMs` drops it and reconnects. An unacked send is re-sent after `ackTimeoutMs`.
 */
export class ChatSocket extends EventTarget {
  constructor({
    url,
    auth,
    minBackoffMs = 300,
    maxBackoffMs = 10000,
    ackTimeoutMs = 10000,
    pingIntervalMs = 25000,
    activityIntervalMs = 15000,
    WebSocketImpl = globalThis.WebSocket,
  }) {
    super();
    this.url = url;
    this.auth = auth;
    this.minBackoffMs = minBackoffMs;
    this.maxBackoffMs = maxBackoffMs;
    this.ackTimeoutMs = ackTimeoutMs;
    this.pingIntervalMs = pingIntervalMs;
    this.activityIntervalMs = activityIntervalMs;
    this.WebSocketImpl = WebSocketImpl;
    this.ws = null;
    this.state = "closed";
    this.attempt = 0;
    this.lastSeq = new Map(); // conversation_id -> highest seq delivered to the app
    this.pending = new Map(); // client_id -> {frame, resolve, reject, sentAt}
    this.lastFrames = []; // the newest frames received, for debugging and tests
    this._stopped = true;
    this._timer = null;
    this._lastActivity = 0;
    this._authFailures = 0; // 4001 closes since the last `hello`
    this._watchTimer = null;
    this._lastFrameAt = 0;
    this._pingAt = 0; // when an unanswered ping went out (0: none)
    this._onInput = () => this._userActive();
    this._onOnline = () => this._online();
    this._onOffline = () => this._offline();
    // Bearer mode hands the live socket its new token; cookie mode reconnects when the gateway closes 4001.
    this._onRefreshed = (e) => e.detail && this._sendRaw({ type: "auth.refresh", token: e.detail });
  }

  /** Remember how far a conversation was loaded, so a reconnect asks only for the gap. */
  track(conversationId, seq) {
    const current = this.lastSeq.get(conversationId) || 0;
    if (seq > current) this.lastSeq.set(conversationId, seq);
  }

  connect() {
    this._stopped = false;
    if (typeof window !== "undefined") {
      window.addEventListener("online", this._onOnline);
      window.addEventListener("offline", this._onOffline);
      for (const name of ACTIVITY_EVENTS) window.addEventListener(name, this._onInput, { capture: true, passive: true });
    }
    this.auth.addEventListener("refreshed", this._onRefreshed);
    this._open();
  }

  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (typeof window !== "undefined") {
      window.removeEventListener("online", this._onOnline);
      window.removeEventListener("offline", this._onOffline);
      for (const name of ACTIVITY_EVENTS) window.removeEventListener(name, this._onInput, true);
    }
    this.auth.removeEventListener("refreshed", this._onRefreshed);
    clearInterval(this._watchTimer);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this._setState("closed");
    for (const entry of this.pending.values()) entry.reject(Object.assign(new Error("socket closed"), { code: "closed" }));
    this.pending.clear();
  }

  _setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, attempt: this.attempt, ...extra } }));
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  async _open() {
    if (this._stopped) return;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      this._setState("offline");
      return;
    }
    this._setState(this.attempt ? "reconnecting" : "connecting");
    let token;
    try {
      // A refused handshake looks like any network failure (close 1006): after a few, try a fresh token.
      const forceRefresh = this.attempt >= 3 && this.attempt % 3 === 0;
      token = forceRefresh ? await this.auth.refresh() : await this.auth.accessToken();
    } catch (err) {
      if (err.status && err.status !== 0) {
        this._emit("error", { code: "unauthenticated", message: "Your session has ended. Please log in again." });
        this._stopped = true;
        this._setState("closed");
        return;
      }
      this._retry();
      return;
    }
    if (this._stopped) return;
    let ws;
    try {
      // Browsers cannot set headers on a WebSocket: the token rides as a subprotocol entry.
      // (Cookie mode: the access cookie goes with the handshake instead.)
      ws = new this.WebSocketImpl(this.url, token ? ["chat.v1", `bearer.${token}`] : ["chat.v1"]);
    } catch (err) {
      this._emit("error", { code: "connect_failed", message: String(err) });
      this._retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.attempt = 0;
      this._sendRaw({ type: "resume", conversations: Object.fromEntries(this.lastSeq) });
      this._setState("open");
      this._flushPending();
      this._lastActivity = 0;
      if (typeof document === "undefined" || document.visibilityState === "visible") this._userActive();
      this._lastFrameAt = Date.now();
      this._pingAt = 0;
      clearInterval(this._watchTimer);
      this._watchTimer = setInterval(() => this._watch(ws), Math.max(10, Math.min(5000, this.ackTimeoutMs / 2)));
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this._lastFrameAt = Date.now();
      this._pingAt = 0; // any frame proves the connection alive
      this._handle(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this._watchTimer);
      if (this._stopped) return;
      if (RECONNECT_CODES_AUTH.has(event.code)) {
        // Expired or refused token: refresh first, then reconnect (refresh failure ends the session).
        // A token refused again and again (no `hello` in between) must not spin: back off, then give up.
        this._authFailures += 1;
        const giveUp = () => {
          this._emit("error", { code: "unauthenticated", message: "Your session has ended. Please log in again." });
          this._stopped = true;
          this._setState("closed");
        };
        if (this._authFailures > MAX_AUTH_FAILURES) {
          giveUp();
          return;
        }
        this.auth.refresh().then(() => this._retry(this._authFailures === 1), giveUp);
        return;
      }
      if (event.code === 1008 || event.code === 4403) {
        this._emit("error", { code: "forbidden", message: event.reason || "The server refused the connection." });
      }
      this._retry();
    };
    ws.onerror = () => {
      // onclose follows and schedules the retry.
    };
  }

  _retry(immediate = false) {
    if (this._stopped) return;
    clearTimeout(this._timer);
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      this._setState("offline");
      return;
    }
    this.attempt += 1;
    // Full jitter keeps a gateway restart from bringing every client back at the same instant.
    const cap = Math.min(this.maxBackoffMs, this.minBackoffMs * 2 ** Math.min(this.attempt - 1, 10));
    const delayMs = immediate ? 0 : Math.round(this.minBackoffMs / 2 + Math.random() * cap);
    this._setState("reconnecting", { delayMs });
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  /**
   * A connection can die without a close (Chrome keeps a socket "open" through a lost
   * network): ping when it has been quiet, drop it when even the ping gets no answer,
   * and re-send a message whose ack is overdue (same client_id: stored once).
   */
  _watch(ws) {
    if (this.ws !== ws || ws.readyState !== 1) return;
    const now = Date.now();
    if (this._pingAt && now - this._pingAt > this.ackTimeoutMs) {
      clearInterval(this._watchTimer);
      this.ws = null;
      try {
        ws.close(4000, "unresponsive");
      } catch {
        // already closing
      }
      this._retry();
      return;
    }
    if (!this._pingAt && now - this._lastFrameAt > this.pingIntervalMs) {
      this._pingAt = now;
      this._sendRaw({ type: "ping" });
    }
    for (const entry of this.pending.values()) {
      if (now - entry.sentAt > this.ackTimeoutMs) {
        entry.sentAt = now;
        this._sendRaw(entry.frame);
        if (!this._pingAt) {
          this._pingAt = now;
          this._sendRaw({ type: "ping" });
        }
      }
    }
  }

  _offline() {
    // Chrome keeps a WebSocket "open" across a network loss; drop it ourselves and resume later.
    clearTimeout(this._timer);
    clearInterval(this._watchTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      try {
        ws.close(4000, "offline");
      } catch {
        // already closing
      }
    }
    if (!this._stopped) this._setState("offline");
  }

  _online() {
    if (this._stopped) return;
    this.attempt = Math.max(this.attempt, 1);
    this._retry(true);
  }

  _sendRaw(frame) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  _flushPending() {
    for (const entry of this.pending.values()) {
      entry.sentAt = Date.now();
      this._sendRaw(entry.frame);
    }
  }

  /**
   * Send a message; resolves with the stored message once the server acked it
   * (durable). While disconnected it waits in the outbox and is re-sent with the
   * same client_id after the reconnect, so it is stored once.
   */
  send(conversationId, body, clientId = newClientId()) {
    // `ref` is echoed in the ack or error frame; the client_id makes a re-send idempotent.
    const frame = { type: "message.send", conversation_id: conversationId, client_id: clientId, body, ref: clientId };
    return new Promise((resolve, reject) => {
      this.pending.set(clientId, { frame, resolve, reject, sentAt: Date.now() });
      this._sendRaw(frame);
    });
  }

  /** Messages sent but not yet acknowledged, in send order. */
  pendingMessages() {
    return [...this.pending.values()].map((e) => e.frame);
  }

  typing(conversationId) {
    return this._sendRaw({ type: "typing", conversation_id: conversationId });
  }

  markRead(conversationId, seq) {
    return this._sendRaw({ type: "read", conversation_id: conversationId, seq });
  }

  /** The person did something: tell the gateway, at most once per interval (presence active / idle). */
  _userActive() {
    const now = Date.now();
    if (now - this._lastActivity < this.activityIntervalMs) return;
    if (this.activity()) this._lastActivity = now;
  }

  activity() {
    return this._sendRaw({ type: "activity" });
  }

  _deliverMessage(message) {
    const cid = message.conversation_id;
    const last = this.lastSeq.get(cid) || 0;
    if (message.seq <= last) return; // a duplicate (replay overlap, second route)
    if (last > 0 && message.seq > last + 1) this._emit("gap", { conversation_id: cid, after: last, before: message.seq });
    this.lastSeq.set(cid, message.seq);
    this._emit("message", message);
  }

  _handle(frame) {
    this.lastFrames.push(frame);
    if (this.lastFrames.length > 50) this.lastFrames.shift();
    this._emit("frame", frame);
    const data = frame.message || frame.payload || frame.data || frame;
    switch (frame.type) {
      case "ack": {
        const clientId = frame.client_id || frame.ref || (frame.message && frame.message.client_id);
        const entry = this.pending.get(clientId);
        if (entry) {
          this.pending.delete(clientId);
          entry.resolve(frame.message || frame);
        }
        this._emit("ack", { client_id: clientId, message: frame.message || frame });
        break;
      }
      case "hello":
        this._authFailures = 0;
        break;
      case "error": {
        const clientId = frame.client_id || frame.ref;
        const detail = { code: frame.code || "error", message: frame.message || frame.detail || frame.code || "Error", client_id: clientId, frame };
        if (clientId && this.pending.has(clientId) && RETRYABLE_ERRORS.has(detail.code)) {
          // The store was slow or we sent too fast: the same client_id again later is safe (idempotent).
          const entry = this.pending.get(clientId);
          const waitMs = Number(frame.retry_after_ms) || Number(frame.retry_after_s) * 1000 || 1000;
          setTimeout(() => {
            if (this.pending.get(clientId) === entry) this._sendRaw(entry.frame);
          }, waitMs);
          break;
        }
        if (clientId && this.pending.has(clientId)) {
          const entry = this.pending.get(clientId);
          this.pending.delete(clientId);
          entry.reject(Object.assign(new Error(detail.message), detail));
        }
        this._emit("error", detail);
        break;
      }
      case "message.new":
        this._deliverMessage(data);
        break;
      case "message.updated":
        this._emit("message.updated", data);
        break;
      case "message.read":
        this._emit("read", data);
        break;
      case "typing":
        this._emit("typing", data);
        break;
      case "presence":
        this._emit("presence", data);
        break;
      case "conversation.updated":
      case "conversation.created":
        this._emit("conversation", frame.conversation || data);
        break;
      case "resume.reload":
      case "reload":
        if (data.conversation_id) this.lastSeq.delete(data.conversation_id);
        this._emit("reload", data);
        break;
      default:
        break;
    }
  }
}

/** Build the three clients from one config object ({authUrl, gatewayUrl, storage, mode, wsUrl}). */
export function createChat({ authUrl, gatewayUrl = "", storage, wsUrl, mode = "bearer" } = {}) {
  const auth = new AuthClient({ baseUrl: authUrl, storage, mode });
  const api = new ChatApi({ baseUrl: gatewayUrl, auth });
  const origin = gatewayUrl || (typeof location !== "undefined" ? location.origin : "");
  const socketUrl = wsUrl || `${origin.replace(/^http/, "ws")}/ws`;
  const socket = new ChatSocket({ url: socketUrl, auth });
  return { auth, api, socket };
}
