// REST access with a JWT pair: login, refresh before expiry, one retry on 401.
//
// Tokens live in sessionStorage: a reload keeps the tab signed in, closing the
// tab signs out, and nothing outlives the browser session.

const STORE_KEY = "imagegen.tokens";
const REFRESH_EARLY_MS = 60_000; // renew a minute before the access token lapses

export class ApiError extends Error {
  constructor(status, detail, errors = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = errors; // bad input: the server's messages per field (a batch names image[i])
  }
}

function claims(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload));
  } catch {
    return {};
  }
}

function tokenExpiry(token) {
  const exp = claims(token).exp;
  return exp ? exp * 1000 : null;
}

// How long before expiry to renew: a minute, or half the lifetime of a short-lived token.
function refreshMargin(token) {
  const { exp, iat } = claims(token);
  return exp && iat ? Math.min(REFRESH_EARLY_MS, ((exp - iat) * 1000) / 2) : REFRESH_EARLY_MS;
}

async function errorBody(response) {
  try {
    return await response.clone().json();
  } catch {
    return null;
  }
}

async function errorDetail(response) {
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") return body.detail;
    return JSON.stringify(body);
  } catch {
    return `${response.status} ${response.statusText}`.trim();
  }
}

export class Auth {
  constructor({ onSignedOut }) {
    this.onSignedOut = onSignedOut;
    this.tokens = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    this.refreshing = null;
    this.timer = null;
    this.renewedListeners = new Set(); // (access) => void, after each renewal
    if (this.tokens) this.schedule();
  }

  // Told of every new access token (the event feed hands it to its open socket).
  onRenewed(listener) {
    this.renewedListeners.add(listener);
    return () => this.renewedListeners.delete(listener);
  }

  get signedIn() {
    return Boolean(this.tokens);
  }

  get access() {
    return this.tokens ? this.tokens.access : null;
  }

  save(tokens) {
    this.tokens = tokens;
    sessionStorage.setItem(STORE_KEY, JSON.stringify(tokens));
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    const expires = tokenExpiry(this.tokens.access);
    if (!expires) return;
    const due = Math.max(expires - Date.now() - refreshMargin(this.tokens.access), 1_000);
    this.timer = setTimeout(() => this.refresh().catch(() => {}), due);
  }

  async login(username, password) {
    const response = await fetch("/api/auth/token/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (!response.ok) throw new ApiError(response.status, await errorDetail(response));
    this.save(await response.json());
  }

  // Single flight: a burst of 401s (or a 4001 racing the timer) refreshes once.
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefresh() {
    if (!this.tokens) throw new ApiError(401, "Not signed in.");
    const response = await fetch("/api/auth/token/refresh/", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh: this.tokens.refresh }),
    });
    if (!response.ok) {
      this.signOut("Your session expired. Please sign in again.");
      throw new ApiError(401, "Session expired.");
    }
    const body = await response.json();
    this.save({ access: body.access, refresh: body.refresh || this.tokens.refresh });
    for (const listener of this.renewedListeners) listener(body.access);
  }

  // A usable access token: refreshed first when it is about to lapse.
  async fresh() {
    const expires = this.tokens && tokenExpiry(this.tokens.access);
    if (expires && expires - Date.now() < Math.min(10_000, refreshMargin(this.access))) await this.refresh();
    if (!this.tokens) throw new ApiError(401, "Not signed in.");
    return this.tokens.access;
  }

  signOut(message = "") {
    clearTimeout(this.timer);
    this.tokens = null;
    sessionStorage.removeItem(STORE_KEY);
    this.onSignedOut(message);
  }
}

// fetch() with the bearer token; on 401 refresh once and resend.
// Returns the Response (for blobs) when raw is set, else the parsed JSON.
export async function api(auth, path, { method = "GET", body, headers = {}, raw = false, signal } = {}) {
  for (let attempt = 1; ; attempt++) {
    const token = await auth.fresh();
    const response = await fetch(path, {
      method,
      body,
      signal,
      headers: { ...headers, Authorization: `Bearer ${token}` },
    });
    if (response.status === 401 && attempt === 1) {
      await auth.refresh();
      continue;
    }
    if (!response.ok) {
      const body = await errorBody(response);
      throw new ApiError(response.status, await errorDetail(response), body && body.errors);
    }
    return raw ? response : response.json();
  }
}
