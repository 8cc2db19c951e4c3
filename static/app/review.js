// The engine's own report in words, and the larger before/after view where the
// seller can draw a box around the product and send the photo again with it.
//
// A box makes a new task (same photo, same options, plus hint_box) rather than a
// retry of the old one: the first task keeps the result and report it had, and
// the new one's options say it was cut with a hint.

const CHECK_TEXT = {
  format: "File format",
  mode: "Colour mode",
  no_alpha: "No transparency",
  bit_depth: "Bits per channel",
  color_profile: "Colour profile",
  square: "Square picture",
  dimensions: "Picture size",
  bytes: "File size",
  jpeg_quality: "JPEG quality",
  frame_white: "White outer frame",
  background_white: "Pure white background",
  product_present: "A product is visible",
  fill: "Product size in the frame",
  edge_gap: "Gap to the edge",
  not_touching_edge: "Product clear of the edge",
  centred: "Product centred",
  shadow_clear_of_frame: "Shadow clear of the frame",
  frame_transparent: "Transparent outer frame",
  background_transparent: "Transparent background",
};

// A hint box narrower or shorter than this cannot frame a product (the server refuses it too).
export const MIN_BOX_SIDE = 8;

function percent(share) {
  return `${Math.round(share * 1000) / 10} %`;
}

function plain(value) {
  if (value == null) return "none";
  if (Array.isArray(value)) {
    if (value.length === 2 && value.every((v) => typeof v === "number" || v == null)) {
      const [low, high] = value;
      if (low == null) return `at most ${high}`;
      if (high == null) return `at least ${low}`;
      return `${low}–${high}`;
    }
    return value.join(", ");
  }
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k.replace(/_/g, " ")} ${plain(v)}`).join(", ");
  }
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

// What was measured against what was expected, in a seller's words.
function measured(name, check) {
  const { value, expected } = check;
  switch (name) {
    case "fill":
      return Array.isArray(expected)
        ? `${percent(value)} of the frame (expected ${percent(expected[0])}–${percent(expected[1])})`
        : `${percent(value)} of the frame`;
    case "background_white":
    case "frame_white": {
      const off = typeof value === "object" && value ? value.off_white_pixels : value;
      return off === 0 ? "no off-white pixels" : `${off} off-white pixels (expected none)`;
    }
    case "dimensions":
    case "square":
      return Array.isArray(value) ? `${value[0]} × ${value[1]} px (expected ${plain(expected)})` : plain(value);
    case "bytes":
      return `${Math.round(value / 1024)} KB (expected ${plain(expected)} bytes)`;
    case "centred":
      return `off centre by ${value} px (expected ${expected})`;
    default:
      return `${plain(value)} (expected ${plain(expected)})`;
  }
}

// [{name, label, state: "passed" | "failed" | "skipped", text}] for a compliance report.
export function describeChecks(compliance) {
  if (!compliance || !compliance.checks) return [];
  return Object.entries(compliance.checks).map(([name, check]) => {
    const label = CHECK_TEXT[name] || name.replace(/_/g, " ");
    // Older reports have only "passed"; newer ones say "status", and a skipped check
    // (one a transparent or original-size file cannot pass) is never shown as passed.
    const state = check.status || (check.skipped ? "skipped" : check.passed ? "passed" : "failed");
    if (state === "skipped") {
      const why = check.reason || "does not apply to this file";
      return { name, label, state, text: `${label}: skipped (${why.replace(/_/g, " ")})` };
    }
    return { name, label, state, text: `${label}: ${state}, ${measured(name, check)}` };
  });
}

export function reviewReasons(compliance) {
  return (compliance && compliance.review_reasons) || [];
}

// A refused photo (no product found) or a doubtful cut: the seller can point at the product.
export function canHint(task) {
  if (!task || task.id == null || !task.input_image_url) return false;
  if (task.status === "completed") return Boolean(task.needs_review);
  return task.status === "failed" && task.error_code === "no_product_found";
}

// Pointer drag on an image -> a rectangle on screen and a box in the image's own pixels.
export class BoxPicker {
  constructor({ stage, image, rect, field, onChange }) {
    this.stage = stage;
    this.image = image;
    this.rect = rect;
    this.field = field;
    this.onChange = onChange;
    this.box = null;
    this.start = null;
    this.enabled = false;
    stage.addEventListener("pointerdown", (event) => this.down(event));
    stage.addEventListener("pointermove", (event) => this.move(event));
    stage.addEventListener("pointerup", (event) => this.up(event));
    stage.addEventListener("pointercancel", () => (this.start = null));
    field.addEventListener("input", () => this.typed());
    // A box typed (or kept) before the photo finished loading is judged against the
    // photo's real size once it has loaded.
    image.addEventListener("load", () => {
      if (this.field.value) this.typed();
    });
    // The drawn rectangle is in screen pixels: redraw it when the image is resized.
    new ResizeObserver(() => this.draw()).observe(image);
  }

  enable(on) {
    this.enabled = on;
    if (on) this.stage.dataset.drawing = "";
    else delete this.stage.dataset.drawing;
  }

  clear() {
    this.box = null;
    this.field.value = "";
    this.draw();
    this.onChange(null);
  }

  // Pointer position in the image's own pixels (the photo as displayed: EXIF rotation applied).
  toImage(event) {
    const bounds = this.image.getBoundingClientRect();
    const sx = this.image.naturalWidth / bounds.width;
    const sy = this.image.naturalHeight / bounds.height;
    const x = Math.min(Math.max(event.clientX - bounds.left, 0), bounds.width);
    const y = Math.min(Math.max(event.clientY - bounds.top, 0), bounds.height);
    return [Math.round(x * sx), Math.round(y * sy)];
  }

  down(event) {
    if (!this.enabled || !this.image.naturalWidth || event.button !== 0) return;
    event.preventDefault();
    this.stage.setPointerCapture(event.pointerId);
    this.start = this.toImage(event);
    this.set([...this.start, ...this.start]);
  }

  move(event) {
    if (!this.start) return;
    this.set([...this.start, ...this.toImage(event)]);
  }

  up(event) {
    if (!this.start) return;
    this.set([...this.start, ...this.toImage(event)]);
    this.start = null;
    this.stage.releasePointerCapture(event.pointerId);
  }

  set([ax, ay, bx, by]) {
    this.box = [Math.min(ax, bx), Math.min(ay, by), Math.max(ax, bx), Math.max(ay, by)];
    this.field.value = this.box.join(",");
    this.draw();
    this.onChange(this.valid() ? this.box : null);
  }

  typed() {
    const parts = this.field.value.split(",").map((part) => Number(part.trim()));
    this.box = parts.length === 4 && parts.every(Number.isInteger) ? parts : null;
    this.draw();
    this.onChange(this.valid() ? this.box : null);
  }

  valid() {
    if (!this.box) return false;
    const [x0, y0, x1, y1] = this.box;
    return x0 >= 0 && y0 >= 0 && x1 <= this.image.naturalWidth && y1 <= this.image.naturalHeight
      && x1 - x0 >= MIN_BOX_SIDE && y1 - y0 >= MIN_BOX_SIDE;
  }

  draw() {
    if (!this.box || !this.image.naturalWidth) {
      this.rect.hidden = true;
      return;
    }
    const [x0, y0, x1, y1] = this.box;
    const scale = this.image.clientWidth / this.image.naturalWidth;
    Object.assign(this.rect.style, {
      left: `${this.image.offsetLeft + x0 * scale}px`,
      top: `${this.image.offsetTop + y0 * scale}px`,
      width: `${(x1 - x0) * scale}px`,
      height: `${(y1 - y0) * scale}px`,
    });
    this.rect.hidden = false;
  }
}

// The fields of a new submission that repeats ``task`` with a hint box.
export function resubmission(task, box) {
  const fields = {};
  for (const [key, value] of Object.entries(task.options || {})) {
    if (key === "hint_box" || value == null) continue;
    fields[key] = String(value);
  }
  fields.hint_box = box.join(",");
  return fields;
}

// The larger before/after view of one card, with the box drawing when a hint can help.
export class CompareView {
  constructor({ dialog, images, onSend }) {
    this.dialog = dialog;
    this.images = images;
    this.onSend = onSend;
    this.entry = null;
    const field = (name) => dialog.querySelector(`[data-field="${name}"]`);
    this.field = field;
    this.before = field("compare-before");
    this.after = field("compare-after");
    this.form = field("hint-form");
    this.send = dialog.querySelector('[data-action="send-box"]');
    this.picker = new BoxPicker({
      stage: field("stage"),
      image: this.before,
      rect: field("box"),
      field: field("hint-box"),
      onChange: (box) => {
        this.send.disabled = !box;
      },
    });
    dialog.querySelector('[data-action="clear-box"]').addEventListener("click", () => this.picker.clear());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    dialog.addEventListener("close", () => {
      this.entry = null;
    });
  }

  async open(entry) {
    const { task } = entry;
    this.entry = entry;
    const label = entry.name || `Photo ${task.id}`;
    this.field("compare-title").textContent = `${label}: before and after`;
    const reasons = reviewReasons(task.compliance).map((r) => r.message);
    const review = this.field("compare-review");
    review.hidden = !(task.status === "completed" && task.needs_review) && task.status !== "failed";
    review.textContent = task.status === "failed"
      ? "No product was found in this photo."
      : `Needs a look: ${reasons.join(" ") || "the engine is not sure this cut-out is right."}`;
    const hint = canHint(task);
    this.form.hidden = !hint;
    this.field("hint-error").textContent = "";
    this.picker.enable(hint);
    this.picker.clear();
    this.before.alt = `Your photo: ${label}`;
    this.after.alt = `Result: ${label}`;
    this.before.removeAttribute("src");
    this.after.removeAttribute("src");
    const showAfter = task.status === "completed" && Boolean(task.result_image_url);
    this.field("compare-after-figure").hidden = !showAfter;
    if (!this.dialog.open) this.dialog.showModal();
    const [before, after] = await Promise.all([
      task.input_image_url ? this.images.get(task.input_image_url) : Promise.resolve(entry.localPreview),
      showAfter ? this.images.get(task.result_image_url) : Promise.resolve(null),
    ]);
    if (this.entry !== entry) return; // closed or switched meanwhile
    this.before.src = before;
    if (after) this.after.src = after;
  }

  async submit() {
    const entry = this.entry;
    const box = this.picker.box;
    if (!entry || !this.picker.valid()) return;
    this.send.disabled = true;
    this.field("hint-error").textContent = "";
    try {
      await this.onSend(entry, box);
      this.dialog.close();
    } catch (error) {
      this.field("hint-error").textContent = error.detail || "The photo could not be sent again.";
      this.send.disabled = false;
    }
  }
}
