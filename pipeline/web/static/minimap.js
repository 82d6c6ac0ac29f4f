// cityops: a small map of one cell and its neighbours, drawn from the grid data (/api/map: no tiles, offline),
// with the case's point and, when the phone shares it, the phone's position.
"use strict";
const miniMap = (() => {
  let grid = null, loading = null;
  const M_PER_DEG = 111195;

  function load() {
    if (!loading) loading = cityops.api("/api/map").then((d) => {
      grid = d.cells.map(([code, sub, kind, rings]) => {
        let a = Infinity, b = Infinity, e = -Infinity, f = -Infinity;
        for (const r of rings) for (const [x, y] of r) { a = Math.min(a, x); b = Math.min(b, y); e = Math.max(e, x); f = Math.max(f, y); }
        return {code, rings, bbox: [a, b, e, f]};
      });
      return grid;
    });
    return loading;
  }

  // Metres and compass direction from (lon1, lat1) to (lon2, lat2) (equirectangular: fine over a few km).
  function bearing(lon1, lat1, lon2, lat2) {
    const k = Math.cos(((lat1 + lat2) / 2) * Math.PI / 180);
    const dx = (lon2 - lon1) * k * M_PER_DEG, dy = (lat2 - lat1) * M_PER_DEG;
    const deg = (Math.atan2(dx, dy) * 180 / Math.PI + 360) % 360;
    const names = ["北 N", "东北 NE", "东 E", "东南 SE", "南 S", "西南 SW", "西 W", "西北 NW"];
    return {metres: Math.hypot(dx, dy), degrees: deg, name: names[Math.round(deg / 45) % 8]};
  }

  async function draw(canvas, cellCode, point, phone) {
    await load();
    const cell = grid.find((c) => c.code === cellCode);
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 170, dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d"); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#f3f6f8"; ctx.fillRect(0, 0, w, h);
    let [a, b, e, f] = cell ? cell.bbox : [point[0] - 0.001, point[1] - 0.001, point[0] + 0.001, point[1] + 0.001];
    const padLon = (e - a) * 1.2 + 0.0008, padLat = (f - b) * 1.2 + 0.0006;  // the neighbours around it
    a -= padLon; e += padLon; b -= padLat; f += padLat;
    const k = Math.cos(((b + f) / 2) * Math.PI / 180);
    const scale = Math.min(w / ((e - a) * k), h / (f - b));
    const cx = (a + e) / 2, cy = (b + f) / 2;
    const xy = (lon, lat) => [w / 2 + (lon - cx) * k * scale, h / 2 - (lat - cy) * scale];
    const near = grid.filter((c) => c.bbox[2] >= a && c.bbox[0] <= e && c.bbox[3] >= b && c.bbox[1] <= f);
    for (const c of near) {
      ctx.beginPath();
      for (const r of c.rings) r.forEach(([lon, lat], i) => { const [x, y] = xy(lon, lat); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
      ctx.closePath();
      const own = c.code === cellCode;
      ctx.fillStyle = own ? "rgba(255,196,0,0.45)" : "#ffffff"; ctx.fill();
      ctx.lineWidth = own ? 2.5 : 1; ctx.strokeStyle = own ? "#b36b00" : "#9aa9b6"; ctx.stroke();
    }
    if (point && point[0] != null) {
      const [x, y] = xy(point[0], point[1]);
      ctx.beginPath(); ctx.arc(x, y, 7, 0, 2 * Math.PI); ctx.fillStyle = "#b0001e"; ctx.fill();
      ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.stroke();
    }
    if (phone) {
      let [x, y] = xy(phone[0], phone[1]);
      const inside = x >= 0 && x <= w && y >= 0 && y <= h;
      x = Math.max(8, Math.min(w - 8, x)); y = Math.max(8, Math.min(h - 8, y));
      ctx.beginPath(); ctx.arc(x, y, 6, 0, 2 * Math.PI); ctx.fillStyle = inside ? "#0050b3" : "rgba(0,80,179,0.45)"; ctx.fill();
    }
    // a 100 m scale bar
    const bar = 100 / M_PER_DEG * scale;
    ctx.fillStyle = "#1d2b38"; ctx.fillRect(8, h - 10, bar, 3); ctx.font = "11px sans-serif"; ctx.fillText("100 m", 10 + bar, h - 6);
    canvas.dataset.cells = String(near.length);
    canvas.dataset.cell = cell ? cell.code : "";
  }

  return {load, draw, bearing};
})();
