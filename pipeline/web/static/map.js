// cityops: the grid map on a <canvas>, drawn from the project's own grid data (no tiles, works offline).
// Cells are coloured by open cases or by health score; hot spots are ringed; a click reports the cell
// under the pointer (found with a point-in-polygon test) and its lon/lat.
"use strict";
const gridMap = (() => {
  let data = null, canvas = null, ctx = null, cells = [], scale = 1, ox = 0, oy = 0, kx = 1;
  let stats = {}, hotspots = [], mode = "open", selected = null, marks = [];
  const onClick = [];

  function project(lon, lat) { return [(lon - ox) * kx * scale, (oy - lat) * scale]; }
  function unproject(x, y) { return [x / (kx * scale) + ox, oy - y / scale]; }

  function layout() {
    const [w0, s0, e0, n0] = data.bbox;
    kx = Math.cos(((s0 + n0) / 2) * Math.PI / 180);   // equirectangular: a metre is a metre both ways
    const cssW = canvas.clientWidth || 900;
    const spanX = (e0 - w0) * kx, spanY = n0 - s0;
    const cssH = Math.min(Math.round(cssW * spanY / spanX), Number(canvas.dataset.maxHeight) || 1400);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr); canvas.height = Math.round(cssH * dpr);
    canvas.style.height = cssH + "px";
    ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const pad = 8;
    scale = Math.min((cssW - 2 * pad) / spanX, (cssH - 2 * pad) / spanY);
    ox = w0 - pad / (kx * scale); oy = n0 + pad / scale;
    cells = data.cells.map(([code, sub, kind, rings]) => {
      const path = new Path2D();
      let minx = Infinity, miny = Infinity, maxx = -Infinity, maxy = -Infinity;
      for (const ring of rings) {
        ring.forEach(([lon, lat], i) => {
          const [x, y] = project(lon, lat);
          if (i === 0) path.moveTo(x, y); else path.lineTo(x, y);
          minx = Math.min(minx, lon); maxx = Math.max(maxx, lon); miny = Math.min(miny, lat); maxy = Math.max(maxy, lat);
        });
        path.closePath();
      }
      return {code, sub, kind, rings, path, bbox: [minx, miny, maxx, maxy]};
    });
  }

  function colour(code) {
    const s = stats[code];
    if (mode === "health") {
      const h = s ? s.health : 100;            // 100 green .. 0 red
      return `hsl(${Math.round(h * 1.2)}, 70%, ${s ? 50 : 88}%)`;
    }
    if (!s || !s.open) return "#eef2f5";
    const t = Math.min(1, s.open / 5);
    return `rgba(${Math.round(230 - 20 * t)}, ${Math.round(160 - 140 * t)}, 40, ${0.35 + 0.6 * t})`;
  }

  function outline(rings, width, colourText) {
    ctx.lineWidth = width; ctx.strokeStyle = colourText; ctx.beginPath();
    for (const ring of rings) ring.forEach(([lon, lat], i) => {
      const [x, y] = project(lon, lat); if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }

  function draw() {
    if (!ctx) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.lineWidth = 0.3; ctx.strokeStyle = "rgba(120,130,140,0.35)";
    for (const c of cells) { ctx.fillStyle = colour(c.code); ctx.fill(c.path); ctx.stroke(c.path); }
    for (const s of data.subdistricts) outline(s.rings, 1.2, "#4a5a6a");
    for (const d of data.districts) outline(d.rings, 2.2, "#1d2b38");
    ctx.font = "11px sans-serif"; ctx.fillStyle = "#1d2b38"; ctx.textAlign = "center";
    for (const s of data.subdistricts) {
      const ring = s.rings[0]; let sx = 0, sy = 0;
      for (const [lon, lat] of ring) { sx += lon; sy += lat; }
      const [x, y] = project(sx / ring.length, sy / ring.length); ctx.fillText(s.name, x, y);
    }
    hotspots.forEach((h, i) => {
      const c = cells.find((cc) => cc.code === h.cell); if (!c) return;
      const [x, y] = project((c.bbox[0] + c.bbox[2]) / 2, (c.bbox[1] + c.bbox[3]) / 2);
      ctx.beginPath(); ctx.arc(x, y, 9, 0, 2 * Math.PI); ctx.lineWidth = 2.5; ctx.strokeStyle = "#b0001e"; ctx.stroke();
      ctx.fillStyle = "#b0001e"; ctx.fillText(String(i + 1), x, y - 12);
    });
    if (selected) { const c = cells.find((cc) => cc.code === selected); if (c) { ctx.lineWidth = 2.5; ctx.strokeStyle = "#0050b3"; ctx.stroke(c.path); } }
    for (const m of marks) {
      const [x, y] = project(m[0], m[1]); ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fillStyle = "#0050b3"; ctx.fill();
    }
  }

  function inRing(lon, lat, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > lat) !== (yj > lat) && lon < (xj - xi) * (lat - yi) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function cellAt(lon, lat) {
    for (const c of cells) {
      const [a, b, e, f] = c.bbox;
      if (lon < a || lon > e || lat < b || lat > f) continue;
      if (c.rings.some((r) => inRing(lon, lat, r))) return c;
    }
    return null;
  }

  async function init(canvasEl) {
    canvas = canvasEl;
    data = await cityops.api("/api/map");
    layout(); draw();
    canvas.addEventListener("click", (ev) => {
      const r = canvas.getBoundingClientRect();
      const [lon, lat] = unproject(ev.clientX - r.left, ev.clientY - r.top);
      const c = cellAt(lon, lat);
      selected = c ? c.code : null; draw();
      for (const fn of onClick) fn(c ? c.code : null, lon, lat);
    });
    window.addEventListener("resize", () => { layout(); draw(); });
    canvas.dataset.ready = String(cells.length);
  }

  return {
    init, draw, cellAt,
    setStats(s, h) { stats = s || {}; hotspots = h || []; draw(); },
    setMode(m) { mode = m; draw(); },
    setMarks(m) { marks = m || []; draw(); },
    select(code) { selected = code; draw(); },
    onClick(fn) { onClick.push(fn); },
    // the screen position of a cell's centre (for tests and for "show on map")
    screenOf(code) {
      const c = cells.find((cc) => cc.code === code); if (!c) return null;
      return project((c.bbox[0] + c.bbox[2]) / 2, (c.bbox[1] + c.bbox[3]) / 2);
    },
    screenOfLonLat(lon, lat) { return project(lon, lat); },
    subdistrictNames() { return Object.fromEntries(data.subdistricts.map((s) => [s.code, s.name])); },
  };
})();
