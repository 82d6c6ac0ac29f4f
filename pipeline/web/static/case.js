// cityops: a case page (reports, dispatches with their rule and reason, timeline); refreshed on live changes.
"use strict";
(() => {
  const {el, api, fmtTime, TEAMS, STATUS, SOURCES} = cityops;
  const caseId = document.querySelector(".case-page").dataset.caseId;
  let revision = null;

  function fact(k, v) { return [el("dt", {}, k), el("dd", {}, v === null || v === undefined || v === "" ? "—" : v)]; }

  async function load() {
    let data;
    try { data = await api("/api/cases/" + encodeURIComponent(caseId)); }
    catch (e) { document.getElementById("case-error").textContent = e.message; return; }
    const c = data.case, s = c.state;
    revision = s.revision;
    document.getElementById("case-facts").replaceChildren(...[
      fact("状态 Status", STATUS[c.status] || c.status), fact("队伍 Team", TEAMS[c.team] || c.team),
      fact("类别 Category", c.category), fact("优先级 Priority", "P" + c.priority),
      fact("期限 Due", fmtTime(c.due_at) + (c.due ? " (" + c.due + ")" : "")),
      fact("网格 Cell", c.cell), fact("街道 Sub-district", c.subdistrict_name || c.subdistrict),
      fact("发现方式 Discovered by", c.discovered_by), fact("来源 Sources", (c.sources || []).map((x) => SOURCES[x] || x).join(", ")),
      fact("上报数 Reports", c.reports), fact("重开 Reopened", s.reopened), fact("规则 Rule", s.rule_id),
      fact("理由 Reason", s.reason), fact("创建 Created", fmtTime(s.created_at)),
    ].flat());
    document.getElementById("case-actions").replaceChildren(
      caseActions.buttons(c, data.actions, () => setTimeout(load, 300),
        (msg) => { document.getElementById("case-error").textContent = msg; }));
    document.getElementById("dispatches").replaceChildren(...data.dispatches.map((a) => el("li", {class: "dispatch"},
      el("span", {class: "time"}, fmtTime(a.created_at)), el("span", {class: "kind"}, a.kind),
      el("span", {class: "team"}, TEAMS[a.team] || a.team), el("code", {}, a.rule_id), el("span", {class: "reason"}, a.reason))));
    const NOTIFY = {delivered: "已送达 delivered", retry: "重试中 retrying", failed: "失败 failed",
      interrupted: "中断重发 resent", missing: "无此对象 no such target"};
    document.getElementById("notify-failed").textContent = (data.notify_failed || []).length
      ? "一级案件通知失败 P1 notification failed: " + data.notify_failed.map((f) => f.target + " (" + f.channel + ")").join(", ")
      : "";
    document.getElementById("notifications").replaceChildren(...(data.notifications || []).map((n) => el("li",
      {class: "step n-" + n.status},
      el("strong", {}, n.target + (n.channel && n.channel !== "-" ? " / " + n.channel : "")),
      el("span", {}, ": " + (NOTIFY[n.status] || n.status) + " " + fmtTime(n.at)
        + (n.status === "delivered" ? ", " + n.latency_s + " s" : "")
        + (n.attempts > 1 ? " (" + n.attempts + " 次 attempts)" : "")),
      n.error ? el("span", {class: "reason"}, n.error) : null)));
    document.getElementById("history-error").textContent = data.history_error || "";
    document.querySelector("#reports tbody").replaceChildren(...data.reports.map((r) => el("tr", {},
      el("td", {}, fmtTime(r.received_at)), el("td", {}, SOURCES[r.source] || r.source), el("td", {}, r.category),
      el("td", {}, r.cell), el("td", {}, r.merged ? "合并 merged" : "首报 first"), el("td", {}, r.description,
        r.address ? el("div", {class: "address"}, "地址 " + r.address) : null,
        (r.attributes || []).map((a) => el("div", {class: "attribute", title: a.code}, a.label + ": ", el("strong", {}, a.value))),
        // only http(s) links are stored (the decoder checks); checked again before making one
        /^https?:\/\//i.test(r.media_url || "") ? el("div", {class: "media"}, el("a", {href: r.media_url,
          rel: "noopener noreferrer nofollow", target: "_blank"}, "照片/视频 media")) : null))));
    // the photos: the reports' (before) and the last resolve's (after), side by side for the verifier
    const shot = (url, label) => url && url.startsWith("/photos/")
      ? el("figure", {class: "photo"}, el("img", {src: url, alt: label}), el("figcaption", {}, label)) : null;
    const shots = data.reports.map((r) => shot(r.media_url, "现场 before · " + fmtTime(r.received_at)))
      .concat([shot(s.after_photo_url, "处置后 after")]).filter(Boolean);
    document.getElementById("photos").replaceChildren(...(shots.length ? shots : [el("p", {class: "hint"}, "暂无照片 No photos")]));
    document.getElementById("timeline").replaceChildren(...data.timeline.map((t) => el("li", {class: "step s-" + t.status},
      el("span", {class: "time"}, fmtTime(t.at)), el("strong", {}, STATUS[t.status] || t.status),
      el("span", {class: "team"}, TEAMS[t.team] || t.team), el("span", {class: "actor"}, t.actor),
      el("span", {class: "reason"}, t.reason))));
  }

  document.addEventListener("DOMContentLoaded", () => {
    load();
    cityops.stream({board: () => load(), feed: () => load()});
  });
})();
