// cityops: the team feed (phone-sized): the team's cases, most urgent and newest first, with their actions,
// and the patrol report form for those who patrol.
"use strict";
(() => {
  const {el, api} = cityops;
  let me = null;

  let pending = null;
  function render(feed) {
    // do not wipe a note the user is typing: render when they leave the field
    const active = document.activeElement;
    if (active && active.classList.contains("note") && active.value && active.closest("#feed")) {
      if (!pending) active.addEventListener("blur", () => { const f = pending; pending = null; render(f); }, {once: true});
      pending = feed; return;
    }
    document.getElementById("feed-team").textContent = feed.team ? "· " + (cityops.TEAMS[feed.team] || feed.team) : "";
    const ul = document.getElementById("feed");
    if (!feed.cases.length) { ul.replaceChildren(el("li", {class: "empty"}, "暂无任务 No assignments")); return; }
    ul.replaceChildren(...feed.cases.map((c) => cityops.caseRow(c,
      c.actions.length ? caseActions.buttons(c, c.actions, null,
        (msg) => { document.getElementById("feed-error").textContent = msg; }) : null)));
    document.body.dataset.version = String(feed.version);
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
    document.getElementById("patrol-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const out = document.getElementById("patrol-result");
      const btn = document.getElementById("patrol-submit");
      btn.disabled = true;
      try {
        const res = await api("/api/patrol", {method: "POST", body: {
          category: document.getElementById("patrol-category").value,
          lat: document.getElementById("patrol-lat").value, lon: document.getElementById("patrol-lon").value,
          note: document.getElementById("patrol-note").value}});
        out.textContent = "已上报 Reported: " + res.report_id;
        document.getElementById("patrol-note").value = "";
      } catch (e) { out.textContent = "失败 Failed: " + e.message; }
      btn.disabled = false;
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    me = await api("/api/me");
    if (me.role !== "member") document.getElementById("feed-section").hidden = true;
    await setupPatrol();
    cityops.stream({feed: render});
  });
})();
