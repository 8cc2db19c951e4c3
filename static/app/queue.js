// The queue of task cards: state per task, merged from snapshots and events, and its DOM.
//
// Events are applied in seq order as they come (the feed guarantees order and
// uniqueness). REST snapshots (the list, a cancel/retry answer, an upload's
// answer) can be older than what events already told us, so a snapshot only
// overwrites a task whose updated_at is not newer than the snapshot's.

import { canHint, describeChecks, reviewReasons } from "./review.js";

const STATUS_TEXT = {
  uploading: "Uploading…",
  pending: "Waiting in line",
  processing: "Processing",
  completed: "Done",
  review: "Needs a look",
  failed: "Failed",
  canceled: "Canceled",
  rejected: "Not accepted",
};

// One line per error code of the server's ErrorCode enum (generation/errors.py);
// tests/generation/test_errors.py fails when a code has no text here.
const ERROR_TEXT = {
  invalid_image: "We could not read this file as a photo.",
  image_too_large: "This photo is too large to process: upload a smaller one.",
  no_product_found: "No product was found in this photo. Mark the product with a box and send it again.",
  product_altered: "The result did not look enough like your product, so it was not used.",
  upstream_timeout: "The image service took too long to answer.",
  upstream_error: "The image service had a problem.",
  safety_block: "The image service declined this photo.",
  no_image_returned: "The image service returned no picture.",
  input_missing: "The uploaded photo is no longer stored: upload it again.",
  expired: "It was not started before the deadline you set, so it was canceled.",
  fetch_failed: "The photo could not be fetched from its address.",
  worker_lost: "The machine working on it stopped before finishing.",
  invalid_options: "The task's settings are no longer valid: send the photo again.",
  internal_error: "Something went wrong on our side.",
};

const DYNAMIC = [
  "status", "progress", "result_image_url", "elapsed_time", "estimated_remaining_seconds",
  "error_code", "error_message", "updated_at", "outputs",
];

const NAMES_KEY = "imagegen.names";
const NAMES_KEPT = 500;

function newer(a, b) {
  return Date.parse(a || 0) > Date.parse(b || 0);
}

function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  return `${Math.round(seconds / 60)} min`;
}

// A photo sent by its address is named after the file at the end of the URL's path
// (as the batch archive names it), else after its host.
export function urlName(url) {
  try {
    const parsed = new URL(url);
    const last = parsed.pathname.split("/").filter(Boolean).pop();
    return last ? decodeURIComponent(last) : parsed.host;
  } catch {
    return url;
  }
}

// A completed task the engine doubts reads "Needs a look", never a green "Done".
export function statusKey(task) {
  return task.status === "completed" && task.needs_review ? "review" : task.status;
}

export function plainError(task) {
  const known = ERROR_TEXT[task.error_code] || "";
  const said = task.error_message || "";
  if (!known) return said || "Something went wrong.";
  return said && said !== known ? `${known} (${said})` : known;
}

export class TaskQueue {
  constructor({ list, template, images, announce, onNeedSnapshot }) {
    this.list = list;
    this.template = template;
    this.images = images;
    this.announce = announce;
    this.onNeedSnapshot = onNeedSnapshot;
    this.byId = new Map();
    this.uploads = 0; // uploads in flight: events for unknown tasks wait for them
    this.snapshotTimer = null;
    // File names are not stored by the server: remember ours for this session.
    this.names = new Map(JSON.parse(sessionStorage.getItem(NAMES_KEY) || "[]"));
  }

  rememberName(id, name) {
    this.names.set(id, name);
    const kept = [...this.names].slice(-NAMES_KEPT);
    sessionStorage.setItem(NAMES_KEY, JSON.stringify(kept));
  }

  get size() {
    return this.list.children.length;
  }

  clear() {
    for (const entry of this.byId.values()) this.forget(entry);
    this.byId.clear();
    this.names.clear();
    sessionStorage.removeItem(NAMES_KEY);
    this.list.replaceChildren();
  }

  forget(entry) {
    if (entry.localPreview) URL.revokeObjectURL(entry.localPreview);
  }

  // A fresh GET /api/tasks/ page: it replaces everything except uploads still in flight.
  replaceAll(tasks) {
    const uploading = [...this.list.querySelectorAll(".card[data-uploading]")];
    for (const entry of this.byId.values()) this.forget(entry);
    this.byId.clear();
    this.list.replaceChildren(...uploading);
    for (const task of tasks) {
      const entry = this.create({ task });
      this.list.append(entry.el);
      this.render(entry);
    }
  }

  // A task as REST returned it: merged unless events already told us something newer.
  upsert(task) {
    const entry = this.byId.get(task.id);
    if (!entry) return;
    const known = entry.task;
    const merged = { ...known, ...task };
    if (newer(known.updated_at, task.updated_at)) for (const key of DYNAMIC) merged[key] = known[key];
    this.update(entry, merged);
  }

  applyEvent(event) {
    let entry = this.byId.get(event.task_id);
    if (!entry) {
      // Not ours from this page (another tab, the CLI) or our upload's answer is
      // still on its way: held back until uploads settle, so it never doubles a card.
      entry = this.create({
        task: { id: event.task_id, created_at: event.timestamp, options: null, input_image_url: null, ...event.data },
        held: this.uploads > 0,
      });
      if (!entry.held) this.show(entry);
      if (!entry.held) this.askSnapshot();
      this.render(entry);
      return;
    }
    this.update(entry, { ...entry.task, ...event.data });
    // The compliance report is not part of events: one list request brings it.
    if (event.data.status === "completed" && !entry.task.compliance) this.askSnapshot();
  }

  update(entry, task) {
    const before = entry.task;
    if (before.status === "pending" && task.status !== "pending" && before.queue_position) {
      // One of ours left the line: everything of ours behind it moved up one.
      for (const other of this.byId.values()) {
        if (other.task.status === "pending" && other.task.queue_position > before.queue_position) {
          other.task.queue_position -= 1;
          this.render(other);
        }
      }
    }
    if (task.status !== "pending") task.queue_position = null;
    entry.task = task;
    this.render(entry);
    if (before.status !== task.status && !entry.held) {
      this.announce(`${this.label(entry)}: ${STATUS_TEXT[statusKey(task)] || task.status}.`);
    }
  }

  // --- Uploads (optimistic cards) -------------------------------------------------------
  // ``source`` is a File (its local preview shows at once) or a photo's URL (the server
  // fetches it; its "before" image comes with the task once fetched).
  addUpload(source, preset) {
    this.uploads += 1;
    const byUrl = typeof source === "string";
    const entry = this.create({
      task: { id: null, status: "uploading", progress: 0, options: { preset }, image_url: byUrl ? source : null },
      name: byUrl ? urlName(source) : source.name,
      localPreview: byUrl ? null : URL.createObjectURL(source),
    });
    entry.el.dataset.uploading = "";
    this.list.prepend(entry.el);
    this.render(entry);
    return entry;
  }

  uploaded(entry, task) {
    this.uploads -= 1;
    delete entry.el.dataset.uploading;
    const known = this.byId.get(task.id);
    if (known && !known.held) {
      // The same task again (an idempotent repeat): keep the card we had.
      entry.el.remove();
      this.forget(entry);
      this.upsert(task);
    } else {
      if (known) {
        // Its events arrived before the upload's answer: they are newer than it.
        const merged = { ...task };
        if (!newer(task.updated_at, known.task.updated_at)) for (const key of DYNAMIC) merged[key] = known.task[key];
        task = merged;
      }
      this.byId.set(task.id, entry);
      entry.el.dataset.taskId = task.id;
      this.rememberName(task.id, entry.name);
      entry.task = { status: "uploading" };
      this.update(entry, task);
      this.show(entry); // its place among the others, newest first
    }
    this.settleUploads();
  }

  rejected(entry, detail) {
    this.uploads -= 1;
    delete entry.el.dataset.uploading;
    this.update(entry, { ...entry.task, status: "rejected", error_message: detail, error_code: null });
    this.settleUploads();
  }

  settleUploads() {
    if (this.uploads > 0) return;
    for (const entry of this.byId.values()) {
      if (entry.held) {
        entry.held = false;
        this.show(entry);
        this.askSnapshot();
      }
    }
  }

  dismiss(entry) {
    entry.el.remove();
    this.forget(entry);
  }

  // Tasks first seen through an event lack their photo URL and options: one
  // list request (debounced) fills them in. Never a per-task detail request.
  askSnapshot() {
    clearTimeout(this.snapshotTimer);
    this.snapshotTimer = setTimeout(() => this.onNeedSnapshot(), 300);
  }

  // --- DOM --------------------------------------------------------------------------------
  create({ task, name = null, localPreview = null, held = false }) {
    if (name == null && task.id != null) name = this.names.get(task.id) || null;
    const el = this.template.content.firstElementChild.cloneNode(true);
    const entry = { task, name, localPreview, held, el, shown: {} };
    el.entry = entry;
    if (task.id != null) {
      this.byId.set(task.id, entry);
      el.dataset.taskId = task.id;
    }
    return entry;
  }

  show(entry) {
    // Newest first, as GET /api/tasks/ orders them; uploads still in flight stay on top.
    const key = (task) => [Date.parse(task.created_at || 0), task.id];
    const [created, id] = key(entry.task);
    const before = [...this.list.children].find((el) => {
      if (el === entry.el || !el.entry || el.entry.task.id == null) return false;
      const [otherCreated, otherId] = key(el.entry.task);
      return otherCreated < created || (otherCreated === created && otherId < id);
    });
    this.list.insertBefore(entry.el, before || null);
  }

  label(entry) {
    return entry.name || (entry.task.image_url ? urlName(entry.task.image_url) : `Photo ${entry.task.id}`);
  }

  render(entry) {
    const { task, el } = entry;
    const field = (name) => el.querySelector(`[data-field="${name}"]`);
    el.dataset.status = task.status;
    const named = task.options && task.options.outputs && task.options.outputs.map((o) => o.name).join(" + ");
    const preset = named || (task.options && task.options.preset);
    field("title").textContent = this.label(entry);
    field("subtitle").textContent = [task.id != null ? `#${task.id}` : "", preset || ""].filter(Boolean).join(" · ");
    const review = statusKey(task) === "review";
    if (review) el.dataset.review = "";
    else delete el.dataset.review;
    field("status").textContent = STATUS_TEXT[statusKey(task)] || task.status;

    const meta = [];
    if (task.status === "pending") {
      if (task.queue_position) meta.push(`${task.queue_position} in line`);
      if (task.estimated_remaining_seconds != null) meta.push(`about ${duration(task.estimated_remaining_seconds)} to go`);
    } else if (task.status === "processing") {
      meta.push(`${task.progress} %`);
      if (task.estimated_remaining_seconds != null) meta.push(`about ${duration(task.estimated_remaining_seconds)} left`);
    } else if (task.status === "completed") {
      if (task.elapsed_time != null) meta.push(`took ${duration(task.elapsed_time)}`);
      if (task.compliance) meta.push(task.compliance.passed ? `file meets ${task.compliance.preset} rules` : `file misses ${task.compliance.preset} rules`);
    }
    field("meta").textContent = meta.join(" · ");

    const progress = field("progress");
    const value = task.status === "completed" ? 100 : task.status === "uploading" ? 0 : task.progress || 0;
    progress.value = value;
    progress.textContent = `${value} %`;
    progress.hidden = !["uploading", "pending", "processing"].includes(task.status);
    progress.setAttribute("aria-label", `Progress of ${this.label(entry)}`);

    const error = field("error");
    const failed = task.status === "failed" || task.status === "rejected";
    error.hidden = !failed;
    error.textContent = failed ? (task.status === "rejected" ? task.error_message : plainError(task)) : "";

    this.renderReport(entry, review);
    this.renderOutputs(entry);

    const buttons = {
      compare: task.status === "completed" && Boolean(task.result_image_url),
      hint: canHint(task),
      download: task.status === "completed" && task.result_image_url,
      cancel: task.status === "pending" || task.status === "processing",
      retry: task.status === "failed" || task.status === "canceled",
      dismiss: task.status === "rejected",
    };
    for (const [action, visible] of Object.entries(buttons)) {
      const button = el.querySelector(`[data-action="${action}"]`);
      button.hidden = !visible;
      button.setAttribute("aria-label", `${button.textContent.trim()} ${this.label(entry)}`);
    }

    this.setImage(entry, "before", entry.localPreview || task.input_image_url, `Original photo: ${this.label(entry)}`);
    this.setImage(entry, "after", task.status === "completed" ? task.result_image_url : null, `White-background result: ${this.label(entry)}`);
  }

  // The review reasons and the compliance checks in words; rebuilt only when the report changes.
  renderReport(entry, review) {
    const { task, el } = entry;
    const field = (name) => el.querySelector(`[data-field="${name}"]`);
    field("review").hidden = !review;
    const report = task.status === "completed" ? task.compliance : null;
    if (entry.shown.report === report) return;
    entry.shown.report = report;
    field("reasons").replaceChildren(
      ...reviewReasons(report).map((reason) => {
        const item = document.createElement("li");
        item.textContent = reason.message;
        item.dataset.code = reason.code;
        return item;
      }),
    );
    const checks = describeChecks(report);
    field("checks").hidden = !checks.length;
    const failed = checks.filter((c) => c.state === "failed").length;
    const passed = checks.filter((c) => c.state === "passed").length;
    const skipped = checks.length - failed - passed;
    field("checks-summary").textContent = [
      `Marketplace checks: ${passed} passed`, failed ? `${failed} failed` : "", skipped ? `${skipped} skipped` : "",
    ].filter(Boolean).join(", ");
    field("checks-list").replaceChildren(
      ...checks.map((check) => {
        const item = document.createElement("li");
        item.dataset.state = check.state;
        item.dataset.check = check.name;
        item.textContent = check.text;
        return item;
      }),
    );
  }

  // Several outputs: each with its size, format, verdict, its own checks and a download.
  // One output is the card itself (its checks and Download button above).
  renderOutputs(entry) {
    const { task, el } = entry;
    const list = el.querySelector('[data-field="outputs"]');
    const outputs = task.status === "completed" && task.outputs && task.outputs.length > 1 ? task.outputs : [];
    list.hidden = !outputs.length;
    if (entry.shown.outputs === outputs || (!outputs.length && !list.children.length)) return;
    entry.shown.outputs = outputs;
    list.replaceChildren(
      ...outputs.map((output) => {
        const item = document.createElement("li");
        item.dataset.output = output.name;
        const report = output.compliance;
        item.dataset.state = report && report.passed ? "passed" : "failed";
        const head = document.createElement("p");
        const name = document.createElement("strong");
        name.textContent = output.name;
        const verdict = report ? (report.passed ? `meets ${output.preset} rules` : `misses ${output.preset} rules`) : "";
        const look = report && report.needs_review ? "needs a look" : "";
        head.append(name, ` ${output.width} x ${output.height} ${output.format.toUpperCase()} · `,
          [verdict, look].filter(Boolean).join(" · "));
        const checks = describeChecks(report);
        const details = document.createElement("details");
        details.className = "checks";
        const summary = document.createElement("summary");
        const failed = checks.filter((c) => c.state === "failed").length;
        summary.textContent = `${output.name} checks: ${checks.filter((c) => c.state === "passed").length} passed` +
          (failed ? `, ${failed} failed` : "");
        const ul = document.createElement("ul");
        ul.replaceChildren(...checks.map((check) => {
          const li = document.createElement("li");
          li.dataset.state = check.state;
          li.dataset.check = check.name;
          li.textContent = check.text;
          return li;
        }));
        details.append(summary, ul);
        const button = document.createElement("button");
        button.type = "button";
        button.className = "secondary";
        button.dataset.action = "download-output";
        button.dataset.output = output.name;
        button.textContent = `Download ${output.name}`;
        button.setAttribute("aria-label", `Download ${output.name} of ${this.label(entry)}`);
        item.append(head, details, button);
        return item;
      }),
    );
  }

  setImage(entry, slot, source, alt) {
    if (entry.shown[slot] === source) return;
    entry.shown[slot] = source;
    const img = entry.el.querySelector(`[data-field="${slot}"]`);
    img.alt = alt;
    if (!source) {
      img.removeAttribute("src");
      img.dataset.empty = "";
      return;
    }
    const set = (url) => {
      if (entry.shown[slot] !== source) return;
      img.src = url;
      delete img.dataset.empty;
    };
    if (source.startsWith("blob:")) set(source);
    else this.images.get(source).then(set, () => {});
  }
}
