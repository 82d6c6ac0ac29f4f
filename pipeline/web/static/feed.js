// cityops: the team feed for a person on the street (a 360-px phone). For each assignment: the category's name,
// the place (sub-district, grid, nearest address or landmark; distance and direction from the phone when it
// shares its position), a small map of the cell and its neighbours, the due time as a countdown, and on opening
// the merged reports (masked by the server) and the photos. Actions and patrol reports go through the phone's
// outbox (queue.js): taken without a connection, they are sent when it is back, applied once.
"use strict";
(() => {
  const {el, api, fmtTime, TEAMS, STATUS, SOURCES} = cityops;
  const LABEL = {accept: "接单 Accept", resolve: "办结 Resolve", reject: "退回 Reject", verify: "核查通过 Verify",
    reopen: "重新派遣 Reopen", confirm: "核实属实 Confirm", void: "作废 Void"};
  const NEEDS_NOTE = {resolve: "处置情况 What was done", reject: "退回理由 Reason for rejecting",
    reopen: "核查不通过原因 Why it is not fixed", void: "作废理由 Why it is not a problem"};
  let me = null, phone = null, last = null, pending = null;
  const open = new Set();                   // cases whose details are shown
  const sentFor = new Map();                // case id -> action queued from this phone (shown until the feed moves)

  function countdown(iso) {
    if (!iso) return {text: "无期限 no due time", cls: ""};
    const ms = new Date(iso).getTime() - Date.now();
    const abs = Math.abs(ms), h = Math.floor(abs / 3600000), m = Math.floor(abs % 3600000 / 60000), s = Math.floor(abs % 60000 / 1000);
    const t = (h ? h + "小时 " : "") + m + "分 " + (h ? "" : s + "秒");
    const en = (h ? h + "h " : "") + m + "m" + (h ? "" : " " + s + "s");
    if (ms < 0) return {text: "超期 " + t + " · overdue " + en, cls: "overdue"};
    return {text: "剩余 " + t + " · " + en + " left", cls: ms < 2 * 3600000 ? "due_soon" : ""};
  }

  function tick() {
    for (const node of document.querySelectorAll("#feed .countdown[data-due]")) {
      const c = countdown(node.dataset.due);
      node.textContent = c.text; node.className = "countdown " + c.cls;
    }
  }

  function distanceText(c) {
    if (!phone || c.lon == null) return "";
    const b = miniMap.bearing(phone[0], phone[1], c.lon, c.lat);
    const d = b.metres < 1000 ? Math.round(b.metres) + " m" : (b.metres / 1000).toFixed(1) + " km";
    return "距你 " + d + " · " + b.name;
  }

  function photoBox(url, label) {
    if (!url) return null;
    if (url.startsWith("/photos/")) return el("figure", {class: "photo"}, el("img", {src: url, alt: label, loading: "lazy"}), el("figcaption", {}, label));
    if (/^https?:\/\//i.test(url)) return el("figure", {class: "photo link"}, el("a", {href: url, rel: "noopener noreferrer nofollow", target: "_blank"}, label + " ↗"));
    return null;
  }

  async function details(c, box) {
    box.replaceChildren(el("p", {class: "hint"}, "加载中 Loading…"));
    let data;
    try { data = await api("/api/cases/" + encodeURIComponent(c.case_id)); }
    catch (e) { box.replaceChildren(el("p", {class: "error"}, e.message)); return; }
    const before = data.reports.map((r) => photoBox(r.media_url, "现场 before · " + fmtTime(r.received_at))).filter(Boolean);
    const after = photoBox(data.case.state.after_photo_url, "处置后 after");
    box.replaceChildren(...[
      el("h3", {}, "上报 Reports (" + data.reports.length + ")"),
      data.history_error ? el("p", {class: "hint"}, data.history_error) : null,
      el("ul", {class: "reports"}, ...data.reports.map((r) => el("li", {class: "report"},
        el("span", {class: "time"}, fmtTime(r.received_at)), " ", el("strong", {}, SOURCES[r.source] || r.source), " ",
        el("span", {class: "desc"}, r.description || ""), r.address ? el("div", {class: "address"}, r.address) : null))),
      el("h3", {}, "照片 Photos"),
      (before.length || after) ? el("div", {class: "photos"}, ...before, after) : el("p", {class: "hint"}, "暂无照片 No photos"),
    ].filter(Boolean));
  }

  function actionBox(c) {
    const box = el("div", {class: "actions"});
    if (sentFor.has(c.case_id)) {
      box.append(el("p", {class: "queued"}, sentFor.get(c.case_id)));
      return box;
    }
    for (const action of c.actions) {
      const note = NEEDS_NOTE[action] ? el("input", {class: "note", name: "note", placeholder: NEEDS_NOTE[action], maxlength: 4000}) : null;
      const photo = action === "resolve" ? el("input", {type: "file", class: "after-photo", accept: "image/jpeg,image/png,image/webp", capture: "environment"}) : null;
      const btn = el("button", {type: "button", class: "act act-" + action, dataset: {action}}, LABEL[action] || action);
      btn.addEventListener("click", async () => {
        const file = photo && photo.files && photo.files[0];
        if (action === "resolve" && c.after_photo_required && !file) {
          document.getElementById("feed-error").textContent = "此类案件办结须附处置后照片 This category needs an after photo";
          return;
        }
        btn.disabled = true;
        await outbox.add("action", "/api/cases/" + encodeURIComponent(c.case_id) + "/actions",
          {action, note: note ? note.value : ""}, file, c.case_id);
        sentFor.set(c.case_id, (navigator.onLine ? "已发送 Sent: " : "离线已保存，联网后发送 Saved offline, sent when back online: ") + (LABEL[action] || action));
        if (last) render(last);
      });
      box.append(el("span", {class: "action"}, note, photo ? el("label", {class: "photo-pick"}, "处置后照片 After photo" + (c.after_photo_required ? " (必需 required)" : ""), photo) : null, btn));
    }
    return box;
  }

  function card(c) {
    const p = c.place || {};
    const cd = countdown(c.due_at);
    const canvas = el("canvas", {class: "minimap", "aria-label": "cell map " + (p.cell || "")});
    const more = el("div", {class: "details"});
    const toggle = el("button", {type: "button", class: "more"}, open.has(c.case_id) ? "收起 Hide" : "详情 Reports & photos");
    toggle.addEventListener("click", () => {
      if (open.has(c.case_id)) { open.delete(c.case_id); more.replaceChildren(); toggle.textContent = "详情 Reports & photos"; }
      else { open.add(c.case_id); toggle.textContent = "收起 Hide"; details(c, more); }
    });
    if (open.has(c.case_id)) details(c, more);
    const li = el("li", {class: "case card-case " + (c.due || "") + " p" + c.priority, dataset: {caseId: c.case_id}},
      el("div", {class: "head"},
        el("strong", {class: "cat-name"}, c.category_name || c.category), el("span", {class: "cat"}, c.category),
        el("span", {class: "prio"}, "P" + c.priority), el("span", {class: "status s-" + c.status}, STATUS[c.status] || c.status)),
      el("div", {class: "countdown " + cd.cls, dataset: {due: ["dispatched", "accepted", "checking"].includes(c.status) ? c.due_at : ""}},
        ["dispatched", "accepted", "checking"].includes(c.status) ? cd.text : "期限 due " + fmtTime(c.due_at)),
      el("div", {class: "place"},
        el("div", {class: "spot"}, (p.spot || "（无附近地址 no address nearby）") + (p.spot_m != null ? " · " + p.spot_m + " m" : "")),
        el("div", {class: "where"}, (p.subdistrict || "") + " · 网格 grid " + (p.grid || "—") + " · 单元 cell " + (p.cell || "—")),
        el("div", {class: "distance"}, distanceText(c))),
      canvas,
      el("div", {class: "meta"}, el("a", {href: "/cases/" + encodeURIComponent(c.case_id), class: "case-link"}, c.case_id),
        " · " + (TEAMS[c.team] || c.team) + " · " + c.reports + " 份上报 reports"),
      actionBox(c), toggle, more);
    requestAnimationFrame(() => miniMap.draw(canvas, p.cell, [c.lon, c.lat], phone));
    return li;
  }

  function render(feed) {
    // do not wipe what the user is typing or choosing: render when they leave the field
    const active = document.activeElement;
    if (active && (active.classList.contains("note") || active.classList.contains("after-photo")) && active.closest("#feed")
        && (active.value || (active.files && active.files.length))) {
      if (!pending) active.addEventListener("blur", () => { const f = pending; pending = null; if (f) render(f); }, {once: true});
      pending = feed; return;
    }
    if (last && last.version !== feed.version) {
      for (const c of feed.cases) {
        const before = last.cases.find((x) => x.case_id === c.case_id);
        if (!before || before.status !== c.status) sentFor.delete(c.case_id);
      }
    }
    last = feed;
    document.getElementById("feed-team").textContent = feed.team ? "· " + (TEAMS[feed.team] || feed.team) : "";
    const ul = document.getElementById("feed");
    if (!feed.cases.length) { ul.replaceChildren(el("li", {class: "empty"}, "暂无任务 No assignments")); return; }
    ul.replaceChildren(...feed.cases.map(card));
    document.body.dataset.version = String(feed.version);
  }

  function showQueue(items, item, outcome) {
    const note = document.getElementById("queue-note");
    note.hidden = !items.length;
    note.textContent = items.length ? "离线待发送 " + items.length + " 项 · " + items.length + " queued, sent when back online" : "";
    if (item && outcome && outcome.startsWith("failed:")) {
      document.getElementById("feed-error").textContent = "未能发送 Not sent: " + outcome.slice(7);
      if (item.caseId) sentFor.delete(item.caseId);
      if (last) render(last);
    }
    if (item && outcome === "sent" && item.kind === "patrol") {
      document.getElementById("patrol-result").textContent = "已上报 Reported: " + item.body.report_id;
    }
  }

  function sharePosition() {
    if (!navigator.geolocation) return;
    navigator.geolocation.watchPosition((pos) => {
      phone = [pos.coords.longitude, pos.coords.latitude];
      document.getElementById("feed-position").textContent = "位置已共享 Position shared (±" + Math.round(pos.coords.accuracy) + " m)";
      if (last) render(last);
    }, (err) => { document.getElementById("feed-position").textContent = "无法定位 No position: " + err.message; },
    {enableHighAccuracy: true, maximumAge: 15000});
  }

  async function setupPatrol() {
    if (!me.can_patrol) return;
    document.getElementById("patrol-section").hidden = false;
    const cats = await api("/api/taxonomy");
    document.getElementById("patrol-category").replaceChildren(...cats.map((c) =>
      el("option", {value: c.code}, c.code + " " + c.name + " (" + c.major + ")")));
    document.getElementById("patrol-locate").addEventListener("click", () => {
      if (!navigator.geolocation) return;
      navigator.geolocation.getCurrentPosition((p) => {
        document.getElementById("patrol-lat").value = p.coords.latitude.toFixed(6);
        document.getElementById("patrol-lon").value = p.coords.longitude.toFixed(6);
      });
    });
    const photo = document.getElementById("patrol-photo"), preview = document.getElementById("patrol-preview");
    photo.addEventListener("change", () => {
      const f = photo.files && photo.files[0];
      preview.hidden = !f; if (f) preview.src = URL.createObjectURL(f);
    });
    document.getElementById("patrol-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = document.getElementById("patrol-result");
      const item = await outbox.add("patrol", "/api/patrol", {
        category: document.getElementById("patrol-category").value,
        lat: document.getElementById("patrol-lat").value, lon: document.getElementById("patrol-lon").value,
        note: document.getElementById("patrol-note").value}, photo.files && photo.files[0]);
      out.textContent = (navigator.onLine ? "发送中 Sending: " : "离线已保存 Saved offline: ") + item.body.report_id;
      document.getElementById("patrol-note").value = ""; photo.value = ""; preview.hidden = true;
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    outbox.onChange(showQueue);
    showQueue(outbox.pending());
    document.getElementById("share-position").addEventListener("click", sharePosition);
    me = await api("/api/me");
    if (me.role !== "member") document.getElementById("feed-section").hidden = true;
    await setupPatrol();
    miniMap.load();
    cityops.stream({feed: render});
    setInterval(tick, 1000);
  });
})();
