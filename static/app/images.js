// Task images need the Authorization header, which <img src> cannot send:
// fetch them as blobs and show object URLs. A few at a time, each once.

import { api } from "./api.js";

const PARALLEL = 4;

export class ImageCache {
  constructor(auth) {
    this.auth = auth;
    this.urls = new Map(); // path -> Promise<object URL>
    this.queue = [];
    this.running = 0;
  }

  get(path) {
    if (!this.urls.has(path)) {
      const promise = new Promise((resolve, reject) => this.queue.push({ path, resolve, reject }));
      this.urls.set(path, promise);
      // A failed load may be retried later (for example after a reconnect).
      promise.catch(() => this.urls.delete(path));
      this.pump();
    }
    return this.urls.get(path);
  }

  pump() {
    while (this.running < PARALLEL && this.queue.length) {
      const { path, resolve, reject } = this.queue.shift();
      this.running += 1;
      api(this.auth, path, { raw: true })
        .then((response) => response.blob())
        .then((blob) => resolve(URL.createObjectURL(blob)), reject)
        .finally(() => {
          this.running -= 1;
          this.pump();
        });
    }
  }

  async blob(path) {
    const url = await this.get(path);
    return (await fetch(url)).blob();
  }

  clear() {
    for (const promise of this.urls.values()) promise.then((url) => URL.revokeObjectURL(url), () => {});
    this.urls.clear();
    this.queue = [];
  }
}
