// cityops: the wall screen (一屏观天下): today's cases, discovery today against the last seven days, on-time closing,
// open and overdue by team, the map with the last hour's cases, and a ticker of new cases and escalations. It
// refetches /api/wall on every live change of the board (server-sent events) and every 20 s.
"use strict";
(() => {
  const {el, api, TEAMS} = cityops;
  const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
  const timeFmt = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", hour: "2-digit", minute: "2-digit", hour12: false});
  const clockFmt = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  let busy = false, again = false, mapReady = null;

  function render(w) {
    const t = w.today, q = w.queues.total, h = w.history || {};
    document.getElementById("w-today").textContent = String(t.cases);
    document.getElementById("w-today-src").textContent = "热线 " + t.citizen + " · 巡查 " + t.patrol + " · 传感 " + t.sensor;
    document.getElementById("w-disc").textContent = pct(t.discovery_rate);
    document.getElementById("w-disc-7").textContent = "近7日 last 7 days " + pct(h.discovery_7d);
    const closing = h.closing_7d || {};
    document.getElementById("w-ontime").textContent = pct(closing.rate);
    document.getElementById("w-ontime-sub").textContent = closing.due !== undefined ? closing.closed_on_time_of_due + " / " + closing.due + " 应结案 due" : "";
    document.getElementById("w-open").textContent = String(q.open);
    document.getElementById("w-soon").textContent = "将到期 due soon " + q.due_soon;
    const od = document.getElementById("w-overdue"); od.textContent = String(q.overdue);
    document.getElementById("w-history-error").textContent = w.history_error || "";
    document.querySelector("#w-teams tbody").replaceChildren(...Object.entries(w.queues.teams).map(([team, v]) =>
      el("tr", {dataset: {key: team}}, el("td", {}, (TEAMS[team] || team).split(" ")[0]), el("td", {class: "open"}, v.open),
        el("td", {class: "overdue" + (v.overdue ? " warn" : "")}, v.overdue))));
    const days = (h.days || []).map((d) => ({label: d.day.slice(5), rate: d.rate, today: false}))
      .concat([{label: "今天", rate: t.discovery_rate, today: true}]);
    const top = Math.max(0.01, ...days.map((d) => d.rate || 0));
    document.getElementById("w-bars").replaceChildren(...days.map((d) => {
      const bar = el("div", {class: "bar" + (d.today ? " today" : "")}, el("span", {}, pct(d.rate)));
      bar.style.height = Math.round(140 * (d.rate || 0) / top) + "px";     // CSP: a style property, not an attribute
      return bar;
    }));
    document.getElementById("w-bar-labels").replaceChildren(...days.map((d) => el("span", {}, d.label)));
    document.getElementById("w-recent-count").textContent = "(" + w.recent.length + ")";
    if (mapReady) mapReady.then(() => gridMap.setMarks(w.recent.map((r) => [r.lon, r.lat])));
    document.getElementById("w-ticker").replaceChildren(...w.ticker.map((x) => el("li", {class: x.kind},
      el("span", {class: "t"}, x.at ? timeFmt.format(new Date(x.at)) : ""),
      x.kind === "escalation" ? "⚠ 超期升级 " : "● 新案件 ",
      (x.category_name || x.category) + " · " + (x.subdistrict_name || "") + " → " + ((TEAMS[x.team] || x.team || "").split(" ")[0]))));
    document.getElementById("wall").dataset.version = String(w.version);
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try { render(await api("/api/wall")); } catch (e) { document.getElementById("w-history-error").textContent = e.message; }
    busy = false;
    if (again) { again = false; setTimeout(refresh, 1000); }
  }

  document.addEventListener("DOMContentLoaded", () => {
    mapReady = gridMap.init(document.getElementById("map"));
    refresh();
    cityops.stream({board: () => refresh()});
    setInterval(refresh, 20000);
    setInterval(() => { document.getElementById("w-clock").textContent = clockFmt.format(new Date()); }, 1000);
  });
})();
