// Batches: a dropped folder (or a handful of photos) sent as one batch, its progress
// from batch_update / batch_complete events, and its ZIP archive.

const PHOTO = /\.(jpe?g|png|webp|heic|heif)$/i;
export const BATCH_LIMIT = 100; // photos per batch, the server's limit

// Every photo under the dropped items, folders walked (DataTransferItem entries).
export async function droppedPhotos(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
  if (!entries.length) return [...dataTransfer.files].filter((file) => PHOTO.test(file.name));
  const files = [];
  async function walk(entry) {
    if (entry.isFile) {
      if (PHOTO.test(entry.name)) files.push(await new Promise((ok, fail) => entry.file(ok, fail)));
      return;
    }
    const reader = entry.createReader();
    // readEntries answers in pieces (about 100 at a time) until an empty one.
    for (;;) {
      const children = await new Promise((ok, fail) => reader.readEntries(ok, fail));
      if (!children.length) break;
      for (const child of children) await walk(child);
    }
  }
  for (const entry of entries) await walk(entry);
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

export function photosOf(fileList) {
  return [...fileList].filter((file) => PHOTO.test(file.name)).sort((a, b) => a.name.localeCompare(b.name));
}

export function chunks(files) {
  const out = [];
  for (let start = 0; start < files.length; start += BATCH_LIMIT) out.push(files.slice(start, start + BATCH_LIMIT));
  return out;
}

// A 400 names each bad part as image[i]: the messages, by file name.
export function refusedParts(errors, files) {
  const refused = [];
  for (const [field, messages] of Object.entries(errors || {})) {
    const match = /^image\[(\d+)\]$/.exec(field);
    const message = Array.isArray(messages) ? messages.join(" ") : String(messages);
    refused.push(match ? { name: files[Number(match[1])]?.name || field, message } : { name: field, message });
  }
  return refused;
}

const FINISHED = new Set(["completed", "canceled"]);

export class BatchList {
  constructor({ list, template, announce, onDownload, onCancel }) {
    this.list = list;
    this.template = template;
    this.announce = announce;
    this.onDownload = onDownload;
    this.onCancel = onCancel;
    this.byId = new Map();
    list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      const card = button && button.closest(".batch");
      if (!card) return;
      const batch = this.byId.get(Number(card.dataset.id)).batch;
      const action = button.dataset.action === "archive" ? this.onDownload : this.onCancel;
      button.disabled = true;
      Promise.resolve(action(batch)).finally(() => {
        button.disabled = false;
      });
    });
  }

  get size() {
    return this.byId.size;
  }

  clear() {
    this.byId.clear();
    this.list.replaceChildren();
  }

  replaceAll(batches) {
    this.clear();
    for (const batch of [...batches].reverse()) this.upsert(batch, { quiet: true });
  }

  // A batch JSON from REST or an event's data (events carry no `tasks`: keep what we had).
  upsert(batch, { quiet = false } = {}) {
    let entry = this.byId.get(batch.id);
    if (!entry) {
      const card = this.template.content.firstElementChild.cloneNode(true);
      card.dataset.id = batch.id;
      entry = { card, batch };
      this.byId.set(batch.id, entry);
      this.list.prepend(card);
    }
    const wasFinished = FINISHED.has(entry.batch.status);
    entry.batch = { ...entry.batch, ...batch };
    this.render(entry);
    if (!quiet && !wasFinished && FINISHED.has(entry.batch.status)) {
      this.announce(`Batch ${batch.id} ${entry.batch.status}: ${entry.batch.counts.completed} of ${entry.batch.total} done.`);
    }
  }

  apply(event) {
    this.upsert(event.data);
  }

  render({ card, batch }) {
    const field = (name) => card.querySelector(`[data-field=${name}]`);
    const counts = batch.counts;
    field("title").textContent = `Batch ${batch.id}`;
    field("subtitle").textContent = `${batch.total} photo${batch.total === 1 ? "" : "s"}`;
    field("status").textContent = batch.status;
    card.dataset.batchStatus = batch.status; // not data-status: that marks task cards
    field("progress").value = batch.progress;
    field("progress").setAttribute("aria-label", `Batch ${batch.id}: ${batch.progress} %`);
    field("counts").textContent =
      `${counts.completed} done · ${counts.processing} working · ${counts.pending} waiting` +
      (counts.failed ? ` · ${counts.failed} failed` : "") + (counts.canceled ? ` · ${counts.canceled} canceled` : "");
    card.querySelector("[data-action=archive]").hidden = counts.completed === 0;
    card.querySelector("[data-action=cancel]").hidden = FINISHED.has(batch.status);
  }
}
