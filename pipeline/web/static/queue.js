// cityops: the phone's outbox. Every action and patrol report is queued on the phone first (localStorage), then
// sent; what cannot be sent (no connection, server unreachable) stays and is sent when the connection is back.
// Each item keeps its id: the action's update_id, the report's report_id and the photo's upload_id, so a resend
// is the same update (the worker applies an update_id once) and the same stored photo.
"use strict";
const outbox = (() => {
  const KEY = "cityops.outbox.v1";
  const listeners = [];
  let busy = false;

  function load() { try { return JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { return []; } }
  function save(items) { localStorage.setItem(KEY, JSON.stringify(items)); for (const fn of listeners) fn(items); }

  // A photo as a JPEG data URL of at most 1600 px (smaller to keep offline; the canvas drops the file's metadata;
  // the server strips it again in any case).
  async function shrink(file) {
    if (!file) return null;
    try {
      const bmp = await createImageBitmap(file);
      const k = Math.min(1, 1600 / Math.max(bmp.width, bmp.height));
      const c = document.createElement("canvas");
      c.width = Math.round(bmp.width * k); c.height = Math.round(bmp.height * k);
      c.getContext("2d").drawImage(bmp, 0, 0, c.width, c.height);
      return c.toDataURL("image/jpeg", 0.85);
    } catch (e) {
      return await new Promise((ok, bad) => { const r = new FileReader(); r.onload = () => ok(r.result); r.onerror = bad; r.readAsDataURL(file); });
    }
  }

  function blobOf(dataUrl) {
    const [head, b64] = dataUrl.split(",");
    const type = (head.match(/data:([^;]+)/) || [])[1] || "image/jpeg";
    const bin = atob(b64); const a = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return new Blob([a], {type});
  }

  function csrf() { return document.querySelector('meta[name="csrf-token"]').content; }

  // One request; a thrown TypeError (fetch could not connect) means "offline": keep the item.
  async function post(path, body, isForm) {
    const headers = {"X-CSRF-Token": csrf()};
    if (!isForm) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {method: "POST", credentials: "same-origin", headers, body: isForm ? body : JSON.stringify(body)});
    let data = null; try { data = await res.json(); } catch (e) { data = null; }
    return {status: res.status, data};
  }

  async function sendOne(item) {
    if (item.photo && !item.photoUrl) {
      const form = new FormData();
      form.append("kind", item.kind === "patrol" ? "report" : "after");
      if (item.caseId) form.append("case_id", item.caseId);
      form.append("upload_id", item.id);
      form.append("photo", blobOf(item.photo), "photo.jpg");
      const up = await post("/api/photos", form, true);
      if (up.status >= 500) return "retry";
      if (up.status !== 201) return "failed:" + ((up.data && up.data.error) || up.status);
      item.photoUrl = up.data.url;
      const items = load(); const i = items.findIndex((x) => x.id === item.id);
      if (i >= 0) { items[i] = item; save(items); }
    }
    const body = Object.assign({}, item.body, item.photoUrl ? {photo_url: item.photoUrl} : {});
    const res = await post(item.path, body, false);
    if (res.status >= 500 || res.status === 429) return "retry";
    if (res.status >= 400) return "failed:" + ((res.data && res.data.error) || res.status);
    return "sent";
  }

  // Send what is queued, oldest first; stop at the first item that must wait for the connection.
  async function flush() {
    if (busy) return; busy = true;
    try {
      for (const item of load()) {
        let outcome;
        try { outcome = await sendOne(item); } catch (e) { outcome = "retry"; }
        if (outcome === "retry") break;
        save(load().filter((x) => x.id !== item.id));
        for (const fn of listeners) fn(load(), item, outcome);
      }
    } finally { busy = false; }
  }

  // kind: "action" (path /api/cases/<id>/actions, body {action, note}) or "patrol" (/api/patrol)
  async function add(kind, path, body, file, caseId) {
    const id = cityops.uuid();
    const item = {id, kind, path, caseId: caseId || null, body: Object.assign({}, body), queuedAt: new Date().toISOString(),
      photo: await shrink(file)};
    if (kind === "action") item.body.update_id = id;
    if (kind === "patrol") item.body.report_id = "WEB-" + new Date().toISOString().slice(0, 10).replace(/-/g, "") + "-" + id.slice(0, 16);
    save(load().concat([item]));
    flush();
    return item;
  }

  window.addEventListener("online", () => flush());
  setInterval(() => { if (load().length) flush(); }, 10000);
  document.addEventListener("DOMContentLoaded", () => { if (load().length) flush(); });
  return {add, flush, pending: load, onChange(fn) { listeners.push(fn); }};
})();
