// The page: wires chat-client.js to the DOM. Sign-in, the user and admin views,
// live chat with typing, receipts and presence, and the profile (phone, preferences).
import { ApiError, createChat, webStorage } from "./chat-client.js";
import { ChatView } from "./chat-view.js";

const $ = (selector) => document.querySelector(selector);

const ui = {
  banner: $(".banner"),
  notice: $(".notice"),
  conn: $('[data-testid="conn-state"]'),
  whoami: $('[data-testid="whoami"]'),
  authView: $("#auth-view"),
  appView: $("#app-view"),
  logout: $("#logout-button"),
  profileButton: $("#profile-button"),
  profile: $("#profile-dialog"),
};

const CONN_LABELS = {
  open: "online",
  connecting: "connecting…",
  reconnecting: "reconnecting…",
  offline: "offline — waiting for the network",
  closed: "disconnected",
};

let noticeTimer = null;

// While the modal profile dialog is open the page behind it is inert: messages go inside it.
function errorBox() {
  return ui.profile.open ? ui.profile.querySelector('[data-testid="profile-error"]') : ui.banner;
}

function noticeBox() {
  return ui.profile.open ? ui.profile.querySelector('[data-testid="profile-notice"]') : ui.notice;
}

/** Show an error a person can act on; ApiError knows the server's words. */
export function showError(err) {
  const text = err instanceof ApiError ? err.userMessage : err && err.message ? err.message : String(err);
  const box = errorBox();
  box.querySelector(".banner-text").textContent = text;
  box.hidden = false;
}

export function clearError() {
  for (const box of [ui.banner, ui.profile.querySelector('[data-testid="profile-error"]')]) {
    box.hidden = true;
    box.querySelector(".banner-text").textContent = "";
  }
}

export function showNotice(text) {
  const box = noticeBox();
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

ui.banner.querySelector(".banner-close").addEventListener("click", clearError);

async function loadConfig() {
  const response = await fetch("/static/config.json", { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`Cannot load the page configuration (HTTP ${response.status}).`);
  return response.json();
}

/** Run a form handler with the button disabled and errors shown. */
function onSubmit(form, handler) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"], button:not([type])');
    if (button) button.disabled = true;
    clearError();
    try {
      await handler(new FormData(form));
    } catch (err) {
      showError(err);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

async function main() {
  let config;
  try {
    config = await loadConfig();
  } catch (err) {
    showError(err);
    return;
  }
  for (const a of document.querySelectorAll("#mail-inbox-link")) a.href = config.mail_inbox_url;
  for (const a of document.querySelectorAll("#sms-inbox-link, .sms-link")) a.href = config.sms_inbox_url;

  const { auth, api, socket } = createChat({
    authUrl: config.auth_url,
    gatewayUrl: config.gateway_url || "",
    storage: webStorage(window.sessionStorage),
    mode: config.auth_mode === "cookie" ? "cookie" : "bearer",
  });
  const view = new ChatView({ api, socket, auth, showError, showNotice });
  window.chatApp = { auth, api, socket, view };

  socket.addEventListener("state", (e) => {
    const { state } = e.detail;
    ui.conn.dataset.state = state;
    ui.conn.textContent = CONN_LABELS[state] || state;
  });
  socket.addEventListener("error", (e) => {
    const { code, message, client_id: clientId, frame } = e.detail;
    // A conversation that is no longer ours (reassigned) answers not_found on resume: nothing to show.
    if (code === "not_found" && !clientId && frame && frame.conversation_id) return;
    if (code === "unauthenticated") signedOut("Your session has ended. Please log in again.");
    else showError(new Error(`${message}${code && code !== message ? ` (${code})` : ""}`));
  });
  auth.addEventListener("expired", () => signedOut("Your session has expired. Please log in again."));

  function signedOut(message) {
    socket.close();
    view.reset();
    ui.appView.hidden = true;
    ui.authView.hidden = false;
    ui.whoami.hidden = true;
    ui.logout.hidden = true;
    ui.profileButton.hidden = true;
    ui.conn.hidden = true;
    if (message) showError(new Error(message));
  }

  async function signedIn() {
    clearError();
    let user = auth.user;
    try {
      user = await auth.me();
    } catch (err) {
      if (err.status === 401) {
        signedOut("Your session has expired. Please log in again.");
        return;
      }
      showError(err);
    }
    if (!auth.loggedIn) return;
    ui.authView.hidden = true;
    ui.appView.hidden = false;
    ui.whoami.hidden = false;
    ui.logout.hidden = false;
    ui.profileButton.hidden = false;
    ui.conn.hidden = false;
    const role = user && user.role === "ADMIN" ? "admin" : "user";
    ui.whoami.textContent = `${(user && (user.display_name || user.username)) || "me"} (${role})`;
    document.body.dataset.role = role;
    await view.start(user);
    socket.connect();
  }

  onSubmit($("#login-form"), async (data) => {
    await auth.login(String(data.get("login")).trim(), String(data.get("password")));
    $("#login-form").reset();
    await signedIn();
  });

  onSubmit($("#register-form"), async (data) => {
    const fields = Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v).trim()]));
    fields.password = String(data.get("password"));
    const result = await auth.register(fields);
    $("#register-form").reset();
    if (!auth.loggedIn) await auth.login(fields.username, fields.password);
    showNotice(`Welcome, ${(result && result.user && result.user.username) || fields.username}!`);
    await signedIn();
  });

  ui.logout.addEventListener("click", async () => {
    await auth.logout();
    signedOut();
  });

  setupProfile(auth);
  setupAccountLinks(auth);

  if (auth.loggedIn) await signedIn();
  else signedOut();
  await handleEmailLink(auth);
}

/** The links auth mails point at this page: /verify-email?token=… and /reset-password?token=…. */
async function handleEmailLink(auth) {
  const token = new URLSearchParams(location.search).get("token");
  if (!token) return;
  if (location.pathname === "/verify-email") {
    history.replaceState(null, "", "/");
    try {
      await auth.verifyEmail(token);
      showNotice("Email address verified ✓ — you will get an email when a reply arrives while you are away.");
      if (auth.loggedIn) await auth.me();
    } catch (err) {
      showError(err);
    }
  } else if (location.pathname === "/reset-password") {
    const form = $("#reset-form");
    form.hidden = false;
    form.elements.token.value = token;
    history.replaceState(null, "", "/");
  }
}

function setupAccountLinks(auth) {
  onSubmit($("#forgot-form"), async (data) => {
    await auth.forgotPassword(String(data.get("email")).trim());
    $("#forgot-form").reset();
    showNotice("If that address belongs to an account, a reset link is on its way (see the dev mail inbox).");
  });
  onSubmit($("#reset-form"), async (data) => {
    await auth.resetPassword(String(data.get("token")), String(data.get("new_password")));
    $("#reset-form").reset();
    $("#reset-form").hidden = true;
    showNotice("Password changed. Log in with the new password.");
  });
}

function setupProfile(auth) {
  const startForm = $("#phone-start-form");
  const verifyForm = $("#phone-verify-form");
  const prefsForm = $("#prefs-form");
  const phoneState = $("#phone-state");
  let phone = "";

  const emailState = $("#email-state");
  const emailResend = $("#email-resend");
  emailResend.addEventListener("click", async () => {
    clearError();
    try {
      await auth.resendEmailVerification();
      showNotice("A new verification link is on its way (see the dev mail inbox).");
    } catch (err) {
      showError(err);
    }
  });

  function render(user) {
    if (!user) return;
    emailState.textContent = user.email ? `${user.email} — ${user.email_verified ? "verified ✓" : "not verified"}` : "none";
    emailState.dataset.verified = String(Boolean(user.email_verified));
    emailResend.hidden = !user.email || Boolean(user.email_verified);
    const phoneShown = user.phone_masked || user.phone;
    if (phoneShown) {
      phoneState.textContent = `${phoneShown} — ${user.phone_verified ? "verified ✓" : "not verified"}`;
    } else {
      phoneState.textContent = "none";
    }
    phoneState.dataset.verified = String(Boolean(user.phone_verified));
    const prefs = user.preferences || user.notification_preferences || {};
    prefsForm.elements.email_enabled.checked = prefs.email_enabled !== false;
    prefsForm.elements.sms_enabled.checked = Boolean(prefs.sms_enabled);
  }

  ui.profileButton.addEventListener("click", async () => {
    clearError();
    try {
      render(await auth.me());
    } catch (err) {
      showError(err);
    }
    ui.profile.showModal();
  });

  onSubmit(startForm, async (data) => {
    phone = String(data.get("phone")).trim();
    const result = await auth.startPhoneVerification(phone);
    verifyForm.hidden = false;
    const masked = (result && (result.phone_masked || result.phone)) || "your phone";
    showNotice(`A code was sent to ${masked}. It is valid for 5 minutes.`);
  });

  onSubmit(verifyForm, async (data) => {
    await auth.verifyPhone(phone, String(data.get("code")).trim());
    verifyForm.reset();
    verifyForm.hidden = true;
    render(await auth.me());
    showNotice("Phone verified ✓");
  });

  onSubmit(prefsForm, async () => {
    const preferences = {
      email_enabled: prefsForm.elements.email_enabled.checked,
      sms_enabled: prefsForm.elements.sms_enabled.checked,
    };
    render(await auth.updateMe({ preferences }));
    showNotice("Preferences saved");
  });
}

main().catch(showError);
