// cityops: helpers shared by every page. Data is always inserted as text (never as HTML).
"use strict";
const cityops = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const TEAMS = {enforcement: "综合执法 enforcement", handling: "综合处置 handling", supervision: "综合监督 supervision",
    command: "指挥中心 command", patrol: "综合巡查 patrol"};
  const STATUS = {new: "新建 new", dispatched: "已派遣 dispatched", accepted: "处置中 accepted",
    resolved: "已处置 resolved", verified: "已核查 verified", closed: "已结案 closed", rejected: "退回 rejected",
    reopened: "返工 rework", escalated: "超期升级 escalated", checking: "待核实 checking", confirmed: "核实属实 confirmed",
    void: "作废 void"};
  const SOURCES = {hotline: "12345热线 hotline", patrol: "巡查 patrol", iot: "传感 sensor"};

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  async function api(path, options) {
    const opts = Object.assign({headers: {}}, options || {});
    if (opts.body && typeof opts.body !== "string") {
      opts.body = JSON.stringify(opts.body);
      opts.headers["Content-Type"] = "application/json";
    }
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRF-Token"] = csrf();
    opts.credentials = "same-origin";
    const res = await fetch(path, opts);
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (res.status === 401) { location.href = "/signin?next=" + encodeURIComponent(location.pathname); }
    if (!res.ok) throw new Error((data && (data.error || (data[0] && data[0].description))) || res.statusText);
    return data;
  }

  const timeFmt = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hour12: false});
  function fmtTime(iso) { return iso ? timeFmt.format(new Date(iso)) : "—"; }

  // Server-sent events with automatic reconnect; the dot in the header shows the connection.
  function stream(handlers) {
    const dot = document.getElementById("live-dot");
    const es = new EventSource("/api/stream");
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => { fn(JSON.parse(ev.data)); });
    }
    es.onopen = () => { if (dot) dot.className = "live on"; };
    es.onerror = () => { if (dot) dot.className = "live off"; };
    return es;
  }

  function uuid() {
    if (crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    const a = new Uint8Array(16); crypto.getRandomValues(a);
    return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function caseRow(c, extra) {
    const due = c.due === "overdue" ? "超期 overdue" : c.due === "due_soon" ? "将到期 due soon" : "";
    return el("li", {class: "case " + (c.due || "") + " p" + c.priority, dataset: {caseId: c.case_id}},
      el("a", {href: "/cases/" + encodeURIComponent(c.case_id), class: "case-link"}, c.case_id),
      el("span", {class: "cat"}, c.category),
      el("span", {class: "status s-" + c.status}, STATUS[c.status] || c.status),
      el("span", {class: "team"}, TEAMS[c.team] || c.team),
      el("span", {class: "prio"}, "P" + c.priority),
      el("span", {class: "due"}, due),
      el("span", {class: "time"}, "期限 due " + fmtTime(c.due_at)),
      extra || null);
  }

  return {el, api, fmtTime, stream, uuid, caseRow, TEAMS, STATUS, SOURCES};
})();
