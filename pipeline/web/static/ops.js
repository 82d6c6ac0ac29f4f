// cityops: the operations centre page. Everything on it is redrawn from the `board` events of the live
// stream; the map is drawn once and recoloured.
"use strict";
(() => {
  const {el, api, fmtTime, TEAMS} = cityops;
  const role = document.querySelector('meta[name="cityops-role"]').content;
  let placing = null;       // the unlocated ticket an operator is placing
  let currentCell = null;
  let lastVersion = -1;

  function fillTable(id, rows) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren(...rows.map((r) => el("tr", {dataset: {key: r.key}},
      el("th", {}, r.label), el("td", {class: "open"}, r.open),
      el("td", {class: "overdue" + (r.overdue ? " warn" : "")}, r.overdue), el("td", {class: "due-soon"}, r.due_soon))));
  }

  function renderAlerts(alerts) {
    document.getElementById("alerts").replaceChildren(...alerts.map((a) =>
      el("div", {class: "alert " + a.severity, dataset: {key: a.key}}, el("strong", {}, a.title), " ", a.detail)));
  }

  function renderUnlocated(list, total) {
    document.getElementById("unlocated-count").textContent = "(" + total + ")";
    const ul = document.getElementById("unlocated");
    ul.replaceChildren(...list.map((t) => {
      const pick = role === "operator" ? el("button", {type: "button", class: "place", onclick: () => {
        placing = t; document.getElementById("place-hint").textContent =
          "点击地图放置 Click the map to place " + t.event_id;
        document.querySelectorAll("#unlocated li").forEach((li) => li.classList.toggle("picked", li.dataset.eventId === t.event_id));
      }}, "放置 Place") : null;
      return el("li", {class: "ticket", dataset: {eventId: t.event_id}},
        el("span", {class: "id"}, t.event_id), el("span", {class: "cat"}, t.category),
        el("span", {class: "time"}, fmtTime(t.occurred_at)),
        el("div", {class: "address"}, t.address || "(无地址 no address)"),
        el("div", {class: "desc"}, t.description), pick);
    }));
  }

  async function showCell(code) {
    currentCell = code;
    const title = document.getElementById("cell-title");
    const ul = document.getElementById("cell-cases");
    if (!code) { title.textContent = "网格案件 Cases in cell"; ul.replaceChildren(); return; }
    title.textContent = "网格 Cell " + code;
    const data = await api("/api/cells/" + encodeURIComponent(code));
    ul.replaceChildren(...(data.cases.length ? data.cases.map((c) => cityops.caseRow(c))
      : [el("li", {class: "empty"}, "无案件 No cases")]));
  }

  async function place(lon, lat) {
    const t = placing; placing = null;
    const hint = document.getElementById("place-hint");
    if (!confirm("放置 Place " + t.event_id + " at " + lon.toFixed(5) + ", " + lat.toFixed(5) + "?")) {
      hint.textContent = "已取消 Cancelled"; return;
    }
    try {
      await api("/api/unlocated/place", {method: "POST", body: {event_id: t.event_id, lon, lat}});
      hint.textContent = "已提交 Placed " + t.event_id; gridMap.setMarks([[lon, lat]]);
    } catch (e) { hint.textContent = "失败 Failed: " + e.message; }
  }

  function render(board) {
    renderAlerts(board.alerts);
    fillTable("team-queues", Object.entries(board.queues.teams).map(([t, q]) => ({key: t, label: TEAMS[t] || t, ...q})));
    fillTable("sub-queues", board.queues.subdistricts.filter((s) => s.open || s.overdue || s.due_soon)
      .map((s) => ({key: s.code, label: s.name, ...s})));
    document.getElementById("hotspots").replaceChildren(...board.hotspots.map((h) =>
      el("li", {dataset: {cell: h.cell}}, el("a", {href: "#", onclick: (ev) => { ev.preventDefault(); gridMap.select(h.cell); showCell(h.cell); }},
        h.cell), ` ${h.subdistrict} · 在办 open ${h.open} · 超期 overdue ${h.overdue} · 健康 health ${h.health}`)));
    renderUnlocated(board.unlocated, board.unlocated_total);
    gridMap.setStats(board.cells, board.hotspots);
    if (currentCell && board.version !== lastVersion) showCell(currentCell);
    lastVersion = board.version;
    document.body.dataset.version = String(board.version);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    await gridMap.init(document.getElementById("map"));
    document.getElementById("colour-by").addEventListener("change", (ev) => gridMap.setMode(ev.target.value));
    gridMap.onClick((code, lon, lat) => { if (placing) place(lon, lat); else showCell(code); });
    cityops.stream({board: render});
  });
})();
