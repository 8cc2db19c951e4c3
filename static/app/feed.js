// The page's one connection to the user's event stream.
//
// The old client lost updates on reconnect and froze at 80 % because it
// reconnected without a resume point and never noticed a missing message.
// Here every event carries a per-user seq with no gaps, so:
//   - connect with after=<last seq applied>; the server replays, then sync_complete;
//   - seq <= last: a duplicate, dropped; seq > last + 1: a lost push, so fetch
//     /api/events/?after=<last> before applying anything later;
//   - recovered:false (purged by retention): reload the task list;
//   - reconnect with exponential backoff and full jitter (cap 30 s), the count
//     reset only after a connection stayed up a minute; the draws come from the
//     browser's own random source per tab, and coming back online waits a
//     jittered moment too (every tab of an office sees the network return at once);
//   - app-level ping every 25 s and a dead-man timer: a half-open socket never
//     reports an error by itself;
//   - the token is renewed before it expires (api.js) and handed to the open
//     socket in band ({"type": "refresh"}): no reconnect, no replay;
//   - 4001 (token rejected anyway): refresh the token, reconnect at once;
//   - no WebSocket, or it keeps failing: long-poll /api/events/?wait=25 and try
//     the WebSocket again after a while. Never a timer polling task details.

import { ApiError, api } from "./api.js";

const PING_MS = 25_000;
const DEADMAN_MS = PING_MS + 10_000;
const BASE_MS = 500;
const CAP_MS = 30_000;
const STABLE_MS = 60_000;
const FALLBACK_AFTER = 4; // failed connects in a row before long-polling
const RETRY_WEBSOCKET_MS = 5 * 60_000;
const POLL_WAIT_S = 25;
const ONLINE_SPREAD_MS = 2_000;

// A uniform draw in [0, ceilingMs): full jitter. crypto's generator is seeded per tab by the browser.
function jitter(ceilingMs) {
  const draw = crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32;
  return draw * ceilingMs;
}

export class EventFeed {
  constructor({ auth, onEvent, onReset, onStatus }) {
    this.auth = auth;
    this.onEvent = onEvent; // (event) => void, called once per seq, in order
    this.onReset = onReset; // async () => last_seq of a fresh task-list snapshot
    this.onStatus = onStatus; // (state, detail) => void
    this.lastSeq = 0;
    this.ws = null;
    this.stopped = true;
    this.attempts = 0;
    this.failures = 0;
    this.authRejections = 0;
    this.pending = new Map(); // live events past a gap, waiting for the hole to be filled
    this.held = []; // events that arrived while a reset reloads the list
    this.paused = false;
    this.catchingUp = false;
    this.mode = "websocket";
    this.stats = { connects: 0, applied: 0, duplicates: 0, gapFetches: 0, resets: 0, refreshed: 0 };
    // Each renewed access token goes to the open socket, which then lives until its expiry.
    this.auth.onRenewed((access) => this.send({ type: "refresh", token: access }));
    this.onOnline = () => {
      // Back online: try soon rather than at the end of a long backoff, but not all tabs at once.
      if (this.retryTimer && !this.ws) {
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.connect(), jitter(ONLINE_SPREAD_MS));
      }
    };
  }

  start(lastSeq) {
    this.stopped = false;
    this.lastSeq = lastSeq;
    window.addEventListener("online", this.onOnline);
    if ("WebSocket" in window) this.connect();
    else this.poll();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.pollAbort) this.pollAbort.abort();
    this.drop(1000);
  }

  status(state, detail) {
    this.state = state;
    this.onStatus(state, detail);
  }

  // --- WebSocket ------------------------------------------------------------
  async connect() {
    this.retryTimer = null;
    if (this.stopped) return;
    let token;
    try {
      token = await this.auth.fresh();
    } catch {
      return; // signed out meanwhile
    }
    if (this.stopped) return;
    this.mode = "websocket";
    this.status("connecting");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ token, after: String(this.lastSeq) });
    const ws = new WebSocket(`${scheme}://${location.host}/ws/notifications?${query}`);
    this.ws = ws;
    this.synced = false;
    this.replay = [];
    ws.onopen = () => {
      this.openedAt = Date.now();
      this.stats.connects += 1;
      this.armDeadman();
      this.pingTimer = setInterval(() => this.send({ type: "ping" }), PING_MS);
    };
    ws.onmessage = (message) => {
      if (ws !== this.ws) return;
      this.armDeadman();
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onMessage(data);
    };
    ws.onclose = (event) => {
      if (ws === this.ws) this.closed(event.code);
    };
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  armDeadman() {
    clearTimeout(this.deadman);
    // Nothing at all (not even a pong) for a ping round trip: presume the socket dead.
    this.deadman = setTimeout(() => this.drop(4000, true), DEADMAN_MS);
  }

  // Forget the current socket at once. A dead socket's close handshake can take
  // minutes, so we do not wait for its onclose.
  drop(code, reconnect = false) {
    const ws = this.ws;
    clearInterval(this.pingTimer);
    clearTimeout(this.deadman);
    if (!ws) return;
    this.ws = null;
    ws.onclose = ws.onmessage = ws.onopen = null;
    try {
      ws.close(code === 1000 ? 1000 : 4000);
    } catch {
      /* already closing */
    }
    if (reconnect) this.closed(1006);
  }

  closed(code) {
    clearInterval(this.pingTimer);
    clearTimeout(this.deadman);
    this.ws = null;
    if (this.stopped) return;
    if (this.openedAt && Date.now() - this.openedAt >= STABLE_MS) this.attempts = 0;
    this.openedAt = null;
    if (this.synced) this.failures = 0;
    if (code === 4001) {
      // The token expired while connected (or was stale): refresh and come straight back.
      this.authRejections += 1;
      if (this.authRejections > 2) {
        this.auth.signOut("The server no longer accepts your session. Please sign in again.");
        return;
      }
      this.status("connecting");
      this.auth.refresh().then(() => this.connect(), () => {});
      return;
    }
    if (code === 4003) {
      this.poll(); // the WebSocket refuses this Origin; plain HTTP still works
      return;
    }
    this.failures += 1;
    if (this.failures >= FALLBACK_AFTER) {
      this.poll();
      return;
    }
    const delay = jitter(Math.min(CAP_MS, BASE_MS * 2 ** this.attempts));
    this.attempts += 1;
    this.status("reconnecting", delay);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  onMessage(message) {
    if (message.type === "pong") return;
    if (message.type === "refreshed") {
      this.stats.refreshed += 1;
      return;
    }
    if (message.type === "error") {
      console.warn("imagegen: server said", message.detail);
      return;
    }
    if (message.type === "sync_complete") {
      this.synced = true;
      this.authRejections = 0;
      this.status("live");
      // Replay was held back so that a reset comes before the events that follow it.
      // (The server may send sync_complete again later, after a catch-up.)
      const replay = this.replay || [];
      this.replay = null;
      const after = async () => {
        if (message.recovered === false) await this.reset();
        for (const event of replay) this.accept(event);
        if (message.last_seq > this.lastSeq) this.catchUp();
      };
      after();
      return;
    }
    if (typeof message.seq !== "number") return;
    if (this.replay) this.replay.push(message);
    else this.accept(message);
  }

  // --- Ordering --------------------------------------------------------------
  accept(event) {
    if (this.stopped) return; // a fetch that ends after sign-out must not draw cards
    if (this.paused) {
      this.held.push(event);
      return;
    }
    if (event.seq <= this.lastSeq) {
      this.stats.duplicates += 1;
      return;
    }
    if (event.seq > this.lastSeq + 1) {
      this.pending.set(event.seq, event);
      this.catchUp();
      return;
    }
    this.apply(event);
  }

  apply(event) {
    this.lastSeq = event.seq;
    this.stats.applied += 1;
    this.onEvent(event);
    for (let next = this.pending.get(this.lastSeq + 1); next; next = this.pending.get(this.lastSeq + 1)) {
      this.pending.delete(next.seq);
      this.lastSeq = next.seq;
      this.stats.applied += 1;
      this.onEvent(next);
    }
    for (const seq of this.pending.keys()) if (seq <= this.lastSeq) this.pending.delete(seq);
  }

  async catchUp() {
    if (this.catchingUp) return;
    this.catchingUp = true;
    this.stats.gapFetches += 1;
    try {
      let page;
      do {
        page = await api(this.auth, `/api/events/?after=${this.lastSeq}`);
        await this.acceptPage(page);
      } while (page.has_more);
      // Still a hole the log could not fill (it never should): go on rather than stall.
      const rest = [...this.pending.values()].sort((a, b) => a.seq - b.seq);
      this.pending.clear();
      for (const event of rest) if (event.seq > this.lastSeq) this.apply(event);
    } catch (error) {
      // The next live event (or reconnect) tries again.
      console.warn("imagegen: could not fetch missed events", error);
    } finally {
      this.catchingUp = false;
    }
  }

  async acceptPage(page) {
    if (page.recovered === false) await this.reset();
    for (const event of page.events) if (event.seq > this.lastSeq) this.apply(event);
  }

  async reset() {
    this.stats.resets += 1;
    this.paused = true;
    try {
      const snapshotSeq = await this.onReset();
      this.lastSeq = Math.max(this.lastSeq, snapshotSeq);
      this.pending.clear();
    } finally {
      this.paused = false;
      const held = this.held;
      this.held = [];
      for (const event of held) this.accept(event);
    }
  }

  // --- Long-poll fallback ---------------------------------------------------------
  async poll() {
    this.drop(1000);
    this.mode = "poll";
    this.status("polling");
    const until = Date.now() + RETRY_WEBSOCKET_MS;
    this.pollAbort = new AbortController();
    while (!this.stopped && Date.now() < until) {
      try {
        const page = await api(this.auth, `/api/events/?after=${this.lastSeq}&wait=${POLL_WAIT_S}`, {
          signal: this.pollAbort.signal,
        });
        this.attempts = 0;
        this.status("polling");
        await this.acceptPage(page);
      } catch (error) {
        if (this.stopped || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status === 401) return; // signed out
        const delay = jitter(Math.min(CAP_MS, BASE_MS * 2 ** this.attempts++));
        this.status("reconnecting", delay);
        await new Promise((resolve) => setTimeout(resolve, delay));
      }
    }
    if (!this.stopped && "WebSocket" in window) {
      // One more failure sends us straight back to polling.
      this.failures = FALLBACK_AFTER - 1;
      this.connect();
    }
  }

  // --- Test and debugging hook: cut the socket as a network drop would. -------------
  cut() {
    const ws = this.ws;
    if (ws) ws.close(4000, "cut by test hook");
  }
}
