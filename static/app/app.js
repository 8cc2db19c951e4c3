// Page wiring: sign-in, uploads, card buttons, and the one event feed.

import { ApiError, Auth, api } from "./api.js";
import { BatchList, chunks, droppedPhotos, photosOf, refusedParts } from "./batches.js";
import { EventFeed } from "./feed.js";
import { ImageCache } from "./images.js";
import { TaskQueue } from "./queue.js";
import { CompareView, resubmission } from "./review.js";

const $ = (selector) => document.querySelector(selector);

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  polling: "Live (fallback: long-poll)",
  offline: "Signed out",
};

const announcer = $("#announcer");
function announce(text) {
  // Clear first so that the same words twice are still read out.
  announcer.textContent = "";
  requestAnimationFrame(() => {
    announcer.textContent = text;
  });
}

const auth = new Auth({ onSignedOut: (message) => signedOut(message) });
const images = new ImageCache(auth);
const queue = new TaskQueue({
  list: $("#queue"),
  template: $("#card-template"),
  images,
  announce,
  onNeedSnapshot: () => refreshMetadata(),
});
const batches = new BatchList({
  list: $("#batches"),
  template: $("#batch-template"),
  announce,
  onDownload: (batch) => downloadArchive(batch),
  onCancel: (batch) => cancelBatch(batch),
});
let feed = null;
const compare = new CompareView({ dialog: $("#compare"), images, onSend: (entry, box) => sendWithBox(entry, box) });

function setConnection(state, detail) {
  const indicator = $("#connection");
  indicator.dataset.state = state;
  let text = CONNECTION_TEXT[state] || state;
  if (state === "reconnecting" && detail != null) text = `Reconnecting in ${Math.ceil(detail / 1000)} s…`;
  indicator.querySelector("[data-field=text]").textContent = text;
}

// --- Signing in and out ----------------------------------------------------------------
$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const error = $("#login-error");
  error.textContent = "";
  form.querySelector("button").disabled = true;
  try {
    await auth.login(form.username.value, form.password.value);
    form.password.value = "";
    await signedIn();
  } catch (failure) {
    error.textContent = failure instanceof ApiError ? failure.detail : "Cannot reach the server.";
  } finally {
    form.querySelector("button").disabled = false;
  }
});

$("#logout").addEventListener("click", () => auth.signOut(""));

async function signedIn() {
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  await loadTasks();
  feed = new EventFeed({
    auth,
    onEvent: (event) => (event.type.startsWith("batch_") ? batches.apply(event) : queue.applyEvent(event)),
    onReset: () => loadTasks(),
    onStatus: setConnection,
  });
  window.imagegen.feed = feed;
  feed.start(window.imagegen.lastSeq);
  $("#file-input").focus();
}

function signedOut(message) {
  if ($("#compare").open) $("#compare").close();
  if (feed) feed.stop();
  feed = null;
  queue.clear();
  batches.clear();
  images.clear();
  setConnection("offline");
  $("#app").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#login-form").username.focus();
}

// Initial load and resets: the list and its last_seq are one snapshot, so the
// feed resumes right after it and misses nothing.
async function loadTasks() {
  // Batches first: the task page's last_seq is then the later snapshot, and the feed
  // replays anything that changed a batch after its own read.
  batches.replaceAll((await api(auth, "/api/batches/")).results);
  const page = await api(auth, "/api/tasks/");
  queue.replaceAll(page.results);
  window.imagegen.lastSeq = page.last_seq;
  updateEmpty();
  return page.last_seq;
}

async function refreshMetadata() {
  try {
    const page = await api(auth, "/api/tasks/");
    for (const task of page.results) queue.upsert(task);
  } catch {
    /* cosmetic only: the cards already show the live state */
  }
}

function updateEmpty() {
  $("#empty").hidden = queue.size > 0;
}

// --- Uploading ----------------------------------------------------------------------------
// The marketplace chosen first, then each one ticked under "Also render for": one task,
// one cut-out, one output per marketplace (presets=...); a single one stays preset=....
function chosenPresets() {
  const also = [...document.querySelectorAll("#also-presets input[name=also]:checked")].map((box) => box.value);
  return [...new Set([$("#preset").value, ...also])];
}

async function upload(files) {
  const presets = chosenPresets();
  const preset = presets.join(" + ");
  const photos = [...files];
  if (!photos.length) return;
  announce(`Uploading ${photos.length} photo${photos.length > 1 ? "s" : ""}.`);
  await Promise.all(
    photos.map(async (file) => {
      const entry = queue.addUpload(file, preset);
      updateEmpty();
      const body = new FormData();
      body.append("image", file, file.name);
      if (presets.length > 1) body.append("presets", presets.join(","));
      else body.append("preset", presets[0]);
      try {
        queue.uploaded(entry, await api(auth, "/api/tasks/", { method: "POST", body }));
      } catch (error) {
        queue.rejected(entry, error instanceof ApiError ? error.detail : "The upload did not reach the server.");
      }
    }),
  );
}

// A photo by its address: the server checks the URL at once (a bad or forbidden one is
// a 400 shown on the rejected card) and a worker fetches it (image_url).
async function submitUrl(url) {
  const presets = chosenPresets();
  const entry = queue.addUpload(url, presets.join(" + "));
  updateEmpty();
  const body = new FormData();
  body.append("image_url", url);
  if (presets.length > 1) body.append("presets", presets.join(","));
  else body.append("preset", presets[0]);
  announce(`Sending ${url} to be fetched.`);
  try {
    queue.uploaded(entry, await api(auth, "/api/tasks/", { method: "POST", body }));
    return true;
  } catch (error) {
    queue.rejected(entry, error instanceof ApiError ? error.detail : "The address did not reach the server.");
    return false;
  }
}

$("#url-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const url = form.image_url.value.trim();
  if (!url) {
    form.image_url.focus();
    return;
  }
  form.querySelector("button").disabled = true;
  try {
    if (await submitUrl(url)) form.image_url.value = "";
  } finally {
    form.querySelector("button").disabled = false;
  }
});

const drop = $("#drop-zone");
$("#file-input").addEventListener("change", (event) => {
  upload(event.target.files).finally(() => {
    event.target.value = "";
  });
});
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => {
    event.preventDefault();
    drop.dataset.over = "";
  });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, () => delete drop.dataset.over);
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  upload(event.dataTransfer.files);
});

// --- Batches --------------------------------------------------------------------------------
async function sendBatches(files) {
  const photos = [...files];
  const error = $("#batch-error");
  error.hidden = true;
  if (!photos.length) {
    showBatchError("No photos (JPEG, PNG, WebP or HEIC) in what you dropped.", []);
    return;
  }
  const preset = $("#preset").value;
  announce(`Sending ${photos.length} photo${photos.length > 1 ? "s" : ""} as a batch.`);
  for (const part of chunks(photos)) {
    const body = new FormData();
    for (const file of part) body.append("image", file, file.name);
    body.append("preset", preset);
    try {
      const response = await api(auth, "/api/batches/", { method: "POST", body, raw: true });
      batches.upsert(await response.json());
    } catch (failure) {
      if (failure instanceof ApiError && failure.status === 400) {
        showBatchError("Nothing was sent from this batch: the server refused these photos.", refusedParts(failure.errors, part));
      } else {
        showBatchError(failure instanceof ApiError ? failure.detail : "The upload did not reach the server.", []);
      }
      return;
    }
  }
}

function showBatchError(detail, parts) {
  const error = $("#batch-error");
  error.querySelector("[data-field=detail]").textContent = detail;
  error.querySelector("[data-field=parts]").replaceChildren(
    ...parts.map(({ name, message }) => {
      const item = document.createElement("li");
      item.textContent = `${name}: ${message}`;
      return item;
    }),
  );
  error.hidden = false;
  announce(detail);
}

async function downloadArchive(batch) {
  try {
    const response = await api(auth, `/api/batches/${batch.id}/archive/`, { raw: true });
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = `batch-${batch.id}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  } catch (failure) {
    announce(failure instanceof ApiError ? failure.detail : "The server could not be reached.");
  }
}

async function cancelBatch(batch) {
  try {
    batches.upsert(await api(auth, `/api/batches/${batch.id}/cancel/`, { method: "POST" }));
  } catch (failure) {
    announce(failure instanceof ApiError ? failure.detail : "The server could not be reached.");
  }
}

const batchDrop = $("#batch-drop");
for (const input of [$("#folder-input"), $("#batch-files")]) {
  input.addEventListener("change", (event) => {
    sendBatches(photosOf(event.target.files)).finally(() => {
      event.target.value = "";
    });
  });
}
for (const name of ["dragenter", "dragover"]) {
  batchDrop.addEventListener(name, (event) => {
    event.preventDefault();
    batchDrop.dataset.over = "";
  });
}
for (const name of ["dragleave", "drop"]) {
  batchDrop.addEventListener(name, () => delete batchDrop.dataset.over);
}
batchDrop.addEventListener("drop", (event) => {
  event.preventDefault();
  // The entries must be read before this handler returns; the walk itself may take longer.
  droppedPhotos(event.dataTransfer).then(sendBatches);
});

// --- Card buttons ----------------------------------------------------------------------------
$("#queue").addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const card = button.closest(".card");
  const entry = card.entry;
  const action = button.dataset.action;
  if (action === "dismiss") {
    queue.dismiss(entry);
    updateEmpty();
    return;
  }
  if (action === "compare" || action === "hint") {
    compare.open(entry).catch(() => {});
    return;
  }
  button.disabled = true;
  try {
    if (action === "download") {
      await download(entry);
    } else if (action === "download-output") {
      await download(entry, (entry.task.outputs || []).find((o) => o.name === button.dataset.output));
    } else {
      queue.upsert(await api(auth, `/api/tasks/${entry.task.id}/${action}/`, { method: "POST" }));
    }
  } catch (error) {
    announce(error instanceof ApiError ? error.detail : "The server could not be reached.");
    card.querySelector("[data-field=notice]").textContent = error instanceof ApiError ? error.detail : "The server could not be reached.";
  } finally {
    button.disabled = false;
  }
});

// A box drawn on a doubtful or refused photo makes a new task from the same input
// with the same options plus hint_box; the first task keeps its own history.
async function sendWithBox(entry, box) {
  const blob = await images.blob(entry.task.input_image_url);
  const extension = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/heic": "heic" }[blob.type] || "jpg";
  const name = entry.name || `photo-${entry.task.id}.${extension}`;
  const file = new File([blob], name, { type: blob.type });
  const fields = resubmission(entry.task, box);
  const body = new FormData();
  body.append("image", file, file.name);
  for (const [key, value] of Object.entries(fields)) body.append(key, value);
  const card = queue.addUpload(file, fields.preset);
  updateEmpty();
  try {
    queue.uploaded(card, await api(auth, "/api/tasks/", { method: "POST", body }));
  } catch (error) {
    // The dialog shows why (a box the server refused); no rejected card is left behind.
    queue.rejected(card, error instanceof ApiError ? error.detail : "The upload did not reach the server.");
    queue.dismiss(card);
    throw error;
  }
  announce(`${name}: sent again with a box around the product.`);
}

// The task's result, or one of its outputs (``output`` from the task JSON's ``outputs``).
async function download(entry, output = null) {
  const blob = await images.blob(output ? output.url : entry.task.result_image_url);
  const extension = { "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp" }[blob.type] || "jpg";
  const stem = (entry.name || `photo-${entry.task.id}`).replace(/\.[^.]+$/, "");
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  const suffix = output ? output.name : (entry.task.options && entry.task.options.preset) || "white";
  link.download = `${stem}-${suffix}.${extension}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

new MutationObserver(updateEmpty).observe($("#queue"), { childList: true });

// A small handle for debugging and the browser tests (feed.cut() drops the socket).
window.imagegen = { queue, batches, auth, feed: null, lastSeq: 0 };

if (auth.signedIn) {
  signedIn().catch(() => auth.signOut("Please sign in again."));
} else {
  signedOut("");
}
