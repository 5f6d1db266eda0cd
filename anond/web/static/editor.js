// The review editor: the original and the masked result of one job, its automatic detections,
// and the operator's regions (mask / exclude, rectangles and polygons, keyframed on video).
// Coordinates are pixels of the upright picture, as in the regions sidecar (docs/REGIONS.md).
import { api, counts } from './common.js';

const JOB = decodeURIComponent(location.pathname.split('/').pop());
const EXCLUDE_PAD = 0.15;        // an exclusion covers its box with this margin (>= 80 % inside)
const MAX_TRACK_KEYS = 400;      // keyframes per excluded track (linear in between)
const HANDLE = 6;                // px on screen
const CLS = { 0: ['face', '#4caf50'], 1: ['plate', '#29b6f6'] };

const S = {
  meta: null, boxes: {}, video: false, W: 1, H: 1, frames: 1, fps: 25, revision: 0,
  frame: 0, view: 'masked', sideBySide: false, regions: [], selected: null, tool: 'select',
  zoom: 1, panX: 0, panY: 0, undo: [], redo: [], drawing: null, drag: null, playing: false,
  busy: false, nextId: 1,
};
const canvas = document.getElementById('stage');
const ctx = canvas.getContext('2d');
const pictures = { original: new Image(), masked: new Image() };
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- geometry and regions

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const rectPts = (r) => [[r.x, r.y], [r.x + r.w, r.y], [r.x + r.w, r.y + r.h], [r.x, r.y + r.h]];

function shapeAt(region, frame) {
  // {rect} or {polygon} at this frame: keys held outside their range, linear in between
  const keys = region.keys;
  if (keys.length === 1 || frame <= keys[0].frame) return keys[0].shape;
  const last = keys[keys.length - 1];
  if (frame >= last.frame) return last.shape;
  let i = 0;
  while (keys[i + 1].frame <= frame) i++;
  const a = (frame - keys[i].frame) / (keys[i + 1].frame - keys[i].frame);
  const p = keys[i].shape, q = keys[i + 1].shape;
  if (p.rect) {
    const m = (k) => p.rect[k] + a * (q.rect[k] - p.rect[k]);
    return { rect: { x: m('x'), y: m('y'), w: m('w'), h: m('h') } };
  }
  return { polygon: p.polygon.map((pt, j) => [pt[0] + a * (q.polygon[j][0] - pt[0]), pt[1] + a * (q.polygon[j][1] - pt[1])]) };
}
const points = (shape) => (shape.rect ? rectPts(shape.rect) : shape.polygon);

function span(region) {
  // inclusive frame span, as anond reads it from the sidecar
  const keys = region.keys;
  const lo = region.start ?? keys[0].frame;
  const hi = region.end ?? (keys.length > 1 ? keys[keys.length - 1].frame : S.frames - 1);
  return [lo, hi];
}
const active = (region, frame) => !S.video || (frame >= span(region)[0] && frame <= span(region)[1]);

function inside(pt, poly) {
  let c = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > pt[1]) !== (yj > pt[1]) && pt[0] < ((xj - xi) * (pt[1] - yi)) / (yj - yi) + xi) c = !c;
  }
  return c;
}

function clampShape(shape) {
  if (shape.rect) {
    const r = shape.rect;
    const x0 = clamp(Math.min(r.x, r.x + r.w), 0, S.W), x1 = clamp(Math.max(r.x, r.x + r.w), 0, S.W);
    const y0 = clamp(Math.min(r.y, r.y + r.h), 0, S.H), y1 = clamp(Math.max(r.y, r.y + r.h), 0, S.H);
    return { rect: { x: x0, y: y0, w: Math.max(1, x1 - x0), h: Math.max(1, y1 - y0) } };
  }
  return { polygon: shape.polygon.map(([x, y]) => [clamp(x, 0, S.W), clamp(y, 0, S.H)]) };
}

function setShape(region, frame, shape) {
  // change the region at this frame: the keyframe there, or a new one (video)
  shape = clampShape(shape);
  if (!S.video) { region.keys = [{ frame: 0, shape }]; return; }
  const at = region.keys.findIndex((k) => k.frame === frame);
  if (at >= 0) region.keys[at].shape = shape;
  else {
    region.keys.push({ frame, shape });
    region.keys.sort((a, b) => a.frame - b.frame);
    const [lo, hi] = [region.keys[0].frame, region.keys[region.keys.length - 1].frame];
    if (region.start != null && region.start > lo) region.start = lo;
    if (region.end != null && region.end < hi) region.end = hi;
  }
}

function boxesAt(frame) { return S.boxes[String(frame)] || []; }

function padded(b) {
  const w = b[2] - b[0], h = b[3] - b[1];
  return clampShape({ rect: { x: b[0] - EXCLUDE_PAD * w, y: b[1] - EXCLUDE_PAD * h, w: w * (1 + 2 * EXCLUDE_PAD), h: h * (1 + 2 * EXCLUDE_PAD) } });
}

function excludeDetection(box) {
  // a photo's box, or a video track over all its frames: an exclude region around it
  const track = box[5];
  let keys = [{ frame: S.video ? S.frame : 0, shape: padded(box) }];
  if (S.video && track >= 0) {
    keys = [];
    const frames = Object.keys(S.boxes).map(Number).sort((a, b) => a - b);
    for (const f of frames) {
      const b = S.boxes[String(f)].find((x) => x[5] === track);
      if (b) keys.push({ frame: f, shape: padded(b) });
    }
    const step = Math.ceil(keys.length / MAX_TRACK_KEYS);
    if (step > 1) keys = keys.filter((k, i) => i % step === 0 || i === keys.length - 1);
  }
  const r = { id: S.nextId++, type: 'exclude', mode: null, keys, start: null, end: null, track };
  if (S.video) { r.start = keys[0].frame; r.end = keys[keys.length - 1].frame; }
  return r;
}

// ---------------------------------------------------------------- sidecar in and out

function toSidecar() {
  const regions = S.regions.map((r) => {
    const out = { type: r.type };
    if (r.type === 'mask' && r.mode) out.mode = r.mode;
    if (!S.video) Object.assign(out, r.keys[0].shape);
    else {
      out.keyframes = r.keys.map((k) => ({ frame: k.frame, ...k.shape }));
      const [lo, hi] = span(r);
      out.start_frame = lo;
      out.end_frame = hi;
    }
    return out;
  });
  return { version: 1, regions };
}

function fromSidecar(sidecar) {
  const out = [];
  for (const r of (sidecar && sidecar.regions) || []) {
    const region = { id: S.nextId++, type: r.type || 'mask', mode: r.mode || null, keys: [], start: null, end: null };
    const shape = (s) => (s.rect ? { rect: { ...s.rect } } : { polygon: s.polygon.map((p) => [...p]) });
    const fps = S.fps || 25;
    const pos = (k) => (k.frame != null ? k.frame : Math.round((k.t || 0) * fps));
    if (r.keyframes) region.keys = r.keyframes.map((k) => ({ frame: pos(k), shape: shape(k) }));
    else region.keys = [{ frame: 0, shape: shape(r) }];
    if (r.start_frame != null) region.start = r.start_frame; else if (r.start != null) region.start = Math.round(r.start * fps);
    if (r.end_frame != null) region.end = r.end_frame; else if (r.end != null) region.end = Math.round(r.end * fps);
    if (S.video && !r.keyframes && region.start == null) region.start = 0;
    out.push(region);
  }
  return out;
}

// ---------------------------------------------------------------- history

function change(fn) {
  S.undo.push(JSON.stringify(S.regions));
  if (S.undo.length > 200) S.undo.shift();
  S.redo = [];
  fn();
  refreshPanel();
  draw();
}
function undo() { if (S.undo.length) { S.redo.push(JSON.stringify(S.regions)); S.regions = JSON.parse(S.undo.pop()); afterHistory(); } }
function redo() { if (S.redo.length) { S.undo.push(JSON.stringify(S.regions)); S.regions = JSON.parse(S.redo.pop()); afterHistory(); } }
function afterHistory() {
  if (!S.regions.some((r) => r.id === S.selected)) S.selected = null;
  refreshPanel();
  draw();
}

// ---------------------------------------------------------------- view transform

function fit() {
  const rect = canvas.getBoundingClientRect();
  const cols = S.sideBySide ? 2 : 1;
  S.zoom = Math.min(rect.width / (S.W * cols), rect.height / S.H) * 0.96;
  S.panX = (rect.width - S.W * S.zoom * cols) / 2;
  S.panY = (rect.height - S.H * S.zoom) / 2;
  draw();
}
const toScreen = ([x, y]) => [x * S.zoom + S.panX, y * S.zoom + S.panY];
function toImage(ev) {
  const rect = canvas.getBoundingClientRect();
  return [(ev.clientX - rect.left - S.panX) / S.zoom, (ev.clientY - rect.top - S.panY) / S.zoom];
}

// ---------------------------------------------------------------- drawing

function path(pts, dx = 0) {
  ctx.beginPath();
  pts.forEach((p, i) => { const [x, y] = toScreen(p); (i ? ctx.lineTo : ctx.moveTo).call(ctx, x + dx, y); });
  ctx.closePath();
}

function draw() {
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(rect.width * dpr)) { canvas.width = Math.round(rect.width * dpr); canvas.height = Math.round(rect.height * dpr); }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  const views = S.sideBySide ? ['original', 'masked'] : [S.view];
  views.forEach((view, i) => {
    const img = pictures[view];
    const dx = i * S.W * S.zoom;
    if (img.complete && img.naturalWidth) ctx.drawImage(img, S.panX + dx, S.panY, S.W * S.zoom, S.H * S.zoom);
    overlay(dx);
  });
}

function overlay(dx) {
  const excluded = S.regions.filter((r) => r.type === 'exclude' && active(r, S.frame));
  for (const b of boxesAt(S.frame)) {
    const [name, color] = CLS[b[4]] || ['?', '#ffeb3b'];
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.setLineDash([]);
    path(rectPts({ x: b[0], y: b[1], w: b[2] - b[0], h: b[3] - b[1] }), dx);
    ctx.stroke();
    const [x, y] = toScreen([b[0], b[1]]);
    ctx.fillStyle = color; ctx.font = '12px system-ui';
    ctx.fillText(b[5] >= 0 ? `${name} #${b[5]}` : name, x + dx, y - 3);
  }
  for (const r of S.regions) {
    if (!active(r, S.frame)) continue;
    const pts = points(shapeAt(r, S.frame));
    const sel = r.id === S.selected;
    if (r.type === 'exclude') {
      ctx.setLineDash([6, 4]); ctx.strokeStyle = sel ? '#ffffff' : '#b0bec5'; ctx.fillStyle = 'rgba(176,190,197,0.12)';
    } else {
      ctx.setLineDash([]); ctx.strokeStyle = sel ? '#ffffff' : '#ff7043'; ctx.fillStyle = 'rgba(255,112,67,0.18)';
    }
    ctx.lineWidth = sel ? 2.5 : 2;
    path(pts, dx); ctx.fill(); ctx.stroke();
    if (sel) {
      ctx.setLineDash([]); ctx.fillStyle = '#ffffff';
      for (const p of pts) { const [x, y] = toScreen(p); ctx.fillRect(x + dx - HANDLE / 2, y - HANDLE / 2, HANDLE, HANDLE); }
    }
    if (S.video && r.keys.some((k) => k.frame === S.frame)) {
      const [x, y] = toScreen(pts[0]); ctx.fillStyle = '#ffd54f'; ctx.fillText('◆ key', x + dx, y + 14);
    }
  }
  void excluded;
  if (S.drawing) {
    ctx.setLineDash([4, 3]); ctx.strokeStyle = '#ffffff'; ctx.lineWidth = 1.5;
    const d = S.drawing;
    const pts = d.kind === 'rect' ? rectPts({ x: d.start[0], y: d.start[1], w: d.end[0] - d.start[0], h: d.end[1] - d.start[1] }) : [...d.pts, d.hover];
    ctx.beginPath();
    pts.forEach((p, i) => { const [x, y] = toScreen(p); (i ? ctx.lineTo : ctx.moveTo).call(ctx, x + dx, y); });
    if (d.kind === 'rect') ctx.closePath();
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

function drawTimeline() {
  const tl = $('timeline');
  if (!S.video) return;
  const rows = [...S.regions.map((r) => ({ span: span(r), color: r.type === 'exclude' ? '#b0bec5' : '#ff7043', sel: r.id === S.selected, keys: r.keys }))];
  const tracks = {};
  for (const [f, list] of Object.entries(S.boxes)) for (const b of list) {
    if (b[5] < 0) continue;
    const t = tracks[b[5]] || (tracks[b[5]] = { lo: +f, hi: +f, cls: b[4] });
    t.lo = Math.min(t.lo, +f); t.hi = Math.max(t.hi, +f);
  }
  for (const t of Object.values(tracks)) rows.push({ span: [t.lo, t.hi], color: (CLS[t.cls] || ['', '#ffeb3b'])[1], keys: [] });
  const w = tl.clientWidth, h = 60;
  tl.width = w; tl.height = h;
  const c = tl.getContext('2d');
  c.clearRect(0, 0, w, h);
  const rowH = Math.max(3, Math.min(10, (h - 4) / Math.max(1, rows.length)));
  const x = (f) => (f / Math.max(1, S.frames - 1)) * (w - 2) + 1;
  rows.forEach((r, i) => {
    c.fillStyle = r.color; c.globalAlpha = r.sel ? 1 : 0.75;
    c.fillRect(x(r.span[0]), 2 + i * rowH, Math.max(2, x(r.span[1]) - x(r.span[0])), rowH - 1);
    c.fillStyle = '#ffd54f';
    for (const k of r.keys) c.fillRect(x(k.frame) - 1, 2 + i * rowH, 2, rowH - 1);
  });
  c.globalAlpha = 1; c.fillStyle = '#ffffff'; c.fillRect(x(S.frame) - 1, 0, 2, h);
}

// ---------------------------------------------------------------- pictures

function pictureUrl(view) {
  const r = `r=${S.revision}`;
  return S.video ? `/api/jobs/${encodeURIComponent(JOB)}/frame/${view}/${S.frame}?${r}`
                 : `/api/jobs/${encodeURIComponent(JOB)}/image/${view}?${r}`;
}
function load(views) {
  return Promise.all(views.map((v) => new Promise((ok) => {
    const img = pictures[v];
    img.onload = () => { draw(); ok(); };
    img.onerror = () => ok();
    img.src = pictureUrl(v);
  })));
}
const visibleViews = () => (S.sideBySide ? ['original', 'masked'] : [S.view]);

async function seek(frame) {
  S.frame = clamp(Math.round(frame), 0, S.frames - 1);
  $('scrubber').value = String(S.frame);
  $('frame-label').textContent = `frame ${S.frame} / ${S.frames - 1}`;
  canvas.dataset.frame = String(S.frame);
  drawTimeline();
  draw();
  await load(visibleViews());
  canvas.dataset.loadedFrame = String(S.frame);
  refreshPanel();
}

async function play() {
  S.playing = !S.playing;
  $('play').textContent = S.playing ? 'Pause' : 'Play';
  while (S.playing && S.frame < S.frames - 1) {
    const t0 = performance.now();
    await seek(S.frame + 1);
    const wait = 1000 / (S.fps || 25) - (performance.now() - t0);
    if (wait > 0) await new Promise((ok) => setTimeout(ok, wait));
  }
  S.playing = false;
  $('play').textContent = 'Play';
}

// ---------------------------------------------------------------- pointer

function regionAt(pt) {
  for (let i = S.regions.length - 1; i >= 0; i--) {
    const r = S.regions[i];
    if (active(r, S.frame) && inside(pt, points(shapeAt(r, S.frame)))) return r;
  }
  return null;
}
function handleAt(ev) {
  const r = S.regions.find((x) => x.id === S.selected);
  if (!r || !active(r, S.frame)) return null;
  const pts = points(shapeAt(r, S.frame));
  const rect = canvas.getBoundingClientRect();
  for (let i = 0; i < pts.length; i++) {
    const [x, y] = toScreen(pts[i]);
    if (Math.abs(ev.clientX - rect.left - x) <= HANDLE && Math.abs(ev.clientY - rect.top - y) <= HANDLE) return { region: r, index: i };
  }
  return null;
}
const boxAt = (pt) => boxesAt(S.frame).find((b) => pt[0] >= b[0] && pt[0] <= b[2] && pt[1] >= b[1] && pt[1] <= b[3]);

canvas.addEventListener('mousedown', (ev) => {
  const pt = toImage(ev);
  if (ev.button === 1 || S.tool === 'pan') { S.drag = { kind: 'pan', x: ev.clientX, y: ev.clientY }; return; }
  if (S.tool === 'rect') { S.drawing = { kind: 'rect', start: pt, end: pt }; return; }
  if (S.tool === 'polygon') {
    if (!S.drawing) S.drawing = { kind: 'polygon', pts: [], hover: pt };
    S.drawing.pts.push(pt);
    draw();
    return;
  }
  const handle = handleAt(ev);
  if (handle) { S.undo.push(JSON.stringify(S.regions)); S.redo = []; S.drag = { kind: 'vertex', ...handle }; return; }
  const r = regionAt(pt);
  if (r && !(r.type === 'exclude' && ev.altKey)) {
    S.selected = r.id;
    S.undo.push(JSON.stringify(S.regions)); S.redo = [];
    S.drag = { kind: 'move', region: r, from: pt, shape: JSON.parse(JSON.stringify(shapeAt(r, S.frame))), moved: false };
    refreshPanel(); draw();
    return;
  }
  const box = boxAt(pt);
  if (box) { change(() => { const x = excludeDetection(box); S.regions.push(x); S.selected = x.id; }); return; }
  S.selected = null; refreshPanel();
  S.drag = { kind: 'pan', x: ev.clientX, y: ev.clientY };
});

window.addEventListener('mousemove', (ev) => {
  const pt = toImage(ev);
  if (S.drawing) {
    if (S.drawing.kind === 'rect') S.drawing.end = pt; else S.drawing.hover = pt;
    draw();
    return;
  }
  const d = S.drag;
  if (!d) return;
  if (d.kind === 'pan') { S.panX += ev.clientX - d.x; S.panY += ev.clientY - d.y; d.x = ev.clientX; d.y = ev.clientY; draw(); return; }
  if (d.kind === 'move') {
    const [dx, dy] = [pt[0] - d.from[0], pt[1] - d.from[1]];
    const s = d.shape;
    const moved = s.rect ? { rect: { ...s.rect, x: s.rect.x + dx, y: s.rect.y + dy } } : { polygon: s.polygon.map(([x, y]) => [x + dx, y + dy]) };
    setShape(d.region, S.frame, moved);
    d.moved = true;
  } else if (d.kind === 'vertex') {
    const s = shapeAt(d.region, S.frame);
    let next;
    if (s.rect) {
      const pts = rectPts(s.rect);
      const opposite = pts[(d.index + 2) % 4];
      next = { rect: { x: Math.min(pt[0], opposite[0]), y: Math.min(pt[1], opposite[1]), w: Math.abs(pt[0] - opposite[0]), h: Math.abs(pt[1] - opposite[1]) } };
      const np = rectPts(next.rect);
      d.index = np.findIndex((p) => Math.abs(p[0] - pt[0]) < 1e-6 && Math.abs(p[1] - pt[1]) < 1e-6);
      if (d.index < 0) d.index = 2;
    } else {
      next = { polygon: s.polygon.map((p, i) => (i === d.index ? pt : p)) };
    }
    setShape(d.region, S.frame, next);
  }
  draw();
});

window.addEventListener('mouseup', () => {
  if (S.drawing && S.drawing.kind === 'rect') {
    const d = S.drawing;
    S.drawing = null;
    const w = Math.abs(d.end[0] - d.start[0]), h = Math.abs(d.end[1] - d.start[1]);
    if (w >= 2 && h >= 2) addRegion({ rect: { x: Math.min(d.start[0], d.end[0]), y: Math.min(d.start[1], d.end[1]), w, h } });
    draw();
  }
  if (S.drag && S.drag.kind === 'move' && !S.drag.moved) S.undo.pop();
  if (S.drag && S.drag.kind !== 'pan') { refreshPanel(); drawTimeline(); }
  S.drag = null;
});

canvas.addEventListener('dblclick', () => closePolygon());
canvas.addEventListener('wheel', (ev) => {
  ev.preventDefault();
  const rect = canvas.getBoundingClientRect();
  const [mx, my] = [ev.clientX - rect.left, ev.clientY - rect.top];
  const f = Math.exp(-ev.deltaY * 0.0015);
  S.panX = mx - (mx - S.panX) * f; S.panY = my - (my - S.panY) * f; S.zoom *= f;
  draw();
}, { passive: false });

function addRegion(shape) {
  change(() => {
    const r = { id: S.nextId++, type: 'mask', mode: $('default-mode').value || null, keys: [{ frame: S.video ? S.frame : 0, shape: clampShape(shape) }], start: null, end: null };
    if (S.video) r.start = S.frame;
    S.regions.push(r);
    S.selected = r.id;
  });
  drawTimeline();
}
function closePolygon() {
  const d = S.drawing;
  if (!d || d.kind !== 'polygon') return;
  S.drawing = null;
  const pts = d.pts.filter((p, i) => i === 0 || Math.hypot(p[0] - d.pts[i - 1][0], p[1] - d.pts[i - 1][1]) > 0.5);
  if (pts.length >= 3) addRegion({ polygon: pts });
  draw();
}

// ---------------------------------------------------------------- panel and tools

function setTool(tool) {
  S.tool = tool; S.drawing = null;
  document.querySelectorAll('#tools [data-tool]').forEach((b) => b.classList.toggle('active', b.dataset.tool === tool));
  canvas.style.cursor = tool === 'pan' ? 'grab' : tool === 'select' ? 'default' : 'crosshair';
  draw();
}

function refreshPanel() {
  const list = $('region-list');
  list.replaceChildren(...S.regions.map((r, i) => {
    const li = document.createElement('li');
    const [lo, hi] = span(r);
    li.textContent = `${r.type}${r.mode ? ' · ' + r.mode : ''}${r.keys[0].shape.polygon ? ' · polygon' : ''}` + (S.video ? ` · ${lo}–${hi}` : '');
    li.dataset.index = String(i);
    li.classList.toggle('selected', r.id === S.selected);
    li.addEventListener('click', () => { S.selected = r.id; if (S.video && !active(r, S.frame)) seek(span(r)[0]); refreshPanel(); draw(); });
    return li;
  }));
  const r = S.regions.find((x) => x.id === S.selected);
  $('region-props').hidden = !r;
  if (r) {
    $('region-type').value = r.type;
    $('region-mode').value = r.mode || '';
    $('region-mode').disabled = r.type === 'exclude';
    const [lo, hi] = span(r);
    $('region-span').textContent = S.video ? `frames ${lo}–${hi}, ${r.keys.length} keyframe(s)` : '';
    $('region-delete').textContent = r.type === 'exclude' ? 'Include again (Del)' : 'Delete (Del)';
  }
  const here = boxesAt(S.frame).length;
  $('det-summary').textContent = `masked: ${counts(S.meta && S.meta.masked)}` + (S.video ? ` · ${here} box(es) on this frame` : '');
  drawTimeline();
}

function selectedRegion() { return S.regions.find((x) => x.id === S.selected); }
function deleteSelected() { if (selectedRegion()) change(() => { S.regions = S.regions.filter((x) => x.id !== S.selected); S.selected = null; }); }
function setMode(mode) { const r = selectedRegion(); if (r && r.type === 'mask') change(() => { r.mode = mode || null; }); }
function toggleType() { const r = selectedRegion(); if (r) change(() => { r.type = r.type === 'mask' ? 'exclude' : 'mask'; if (r.type === 'exclude') r.mode = null; }); }
function setSpanEnd(which) {
  const r = selectedRegion();
  if (!r || !S.video) return;
  change(() => {
    if (which === 'start') { r.start = Math.min(S.frame, r.keys[0].frame); }
    else { r.end = Math.max(S.frame, r.keys[r.keys.length - 1].frame); }
  });
}

function toggleView() {
  S.view = S.view === 'masked' ? 'original' : 'masked';
  $('view-toggle').textContent = `Showing: ${S.view}`;
  load(visibleViews()).then(draw);
}

// ---------------------------------------------------------------- actions

function status(text) { $('status').textContent = text; }
function setBusy(busy) { S.busy = busy; for (const id of ['apply', 'approve', 'reject']) $(id).disabled = busy; }

async function waitFor(test) {
  for (;;) {
    await new Promise((ok) => setTimeout(ok, 700));
    let data = null;
    try { data = await api('GET', `/api/jobs/${encodeURIComponent(JOB)}`); } catch (e) { if (e.status === 404) return null; throw e; }
    if (test(data)) return data;
  }
}

async function apply() {
  if (S.busy) return;
  setBusy(true);
  status('applying…');
  try {
    await api('POST', `/api/jobs/${encodeURIComponent(JOB)}/apply`, toSidecar());
    status('re-running the job…');
    const before = S.revision;
    const data = await waitFor((d) => d.ready && d.meta.revision > before);
    if (!data) { status('the job left the review area'); return; }
    receive(data, false);
    await load(visibleViews());
    status(`applied · revision ${S.revision}`);
  } catch (e) { status(`not applied: ${e.message}`); }
  finally { setBusy(false); }
}

async function finish(action) {
  if (S.busy) return;
  if (action === 'reject' && !confirm('Reject: the input goes to the failed folder. Continue?')) return;
  setBusy(true);
  status(`${action}…`);
  try {
    await api('POST', `/api/jobs/${encodeURIComponent(JOB)}/${action}`);
    await waitFor(() => false);
    status(action === 'approve' ? 'approved: the result is in the outbox' : 'rejected: the input is in the failed folder');
    document.body.dataset.done = action;
  } catch (e) { status(`${action} failed: ${e.message}`); setBusy(false); }
}

function receive(data, withRegions) {
  S.meta = data.meta; S.boxes = (data.boxes && data.boxes.frames) || {};
  S.video = data.meta.kind === 'video';
  S.W = data.meta.width; S.H = data.meta.height; S.frames = Math.max(1, data.meta.frames || 1);
  S.fps = data.meta.fps || 25; S.revision = data.meta.revision || 0;
  if (withRegions) S.regions = fromSidecar(data.regions);
  $('title').textContent = `${data.meta.name || JOB}`;
  document.title = `anond · ${JOB}`;
  canvas.dataset.revision = String(S.revision);
  refreshPanel();
}

// ---------------------------------------------------------------- start

document.querySelectorAll('#tools [data-tool]').forEach((b) => b.addEventListener('click', () => setTool(b.dataset.tool)));
$('view-toggle').addEventListener('click', toggleView);
$('side-by-side').addEventListener('click', () => { S.sideBySide = !S.sideBySide; $('side-by-side').classList.toggle('active', S.sideBySide); load(visibleViews()); fit(); });
$('zoom-fit').addEventListener('click', fit);
$('undo').addEventListener('click', undo);
$('redo').addEventListener('click', redo);
$('apply').addEventListener('click', apply);
$('approve').addEventListener('click', () => finish('approve'));
$('reject').addEventListener('click', () => finish('reject'));
$('region-delete').addEventListener('click', deleteSelected);
$('region-mode').addEventListener('change', (ev) => setMode(ev.target.value));
$('region-type').addEventListener('change', toggleType);
$('play').addEventListener('click', play);
$('step-prev').addEventListener('click', () => seek(S.frame - 1));
$('step-next').addEventListener('click', () => seek(S.frame + 1));
$('scrubber').addEventListener('input', (ev) => seek(+ev.target.value));
$('timeline').addEventListener('click', (ev) => {
  const rect = ev.target.getBoundingClientRect();
  seek(((ev.clientX - rect.left) / rect.width) * (S.frames - 1));
});
window.addEventListener('resize', fit);

window.addEventListener('keydown', (ev) => {
  if (ev.target.matches('input[type=password], select')) return;
  const k = ev.key;
  if ((ev.ctrlKey || ev.metaKey) && k.toLowerCase() === 'z') { ev.preventDefault(); ev.shiftKey ? redo() : undo(); return; }
  if ((ev.ctrlKey || ev.metaKey) && k.toLowerCase() === 'y') { ev.preventDefault(); redo(); return; }
  if ((ev.ctrlKey || ev.metaKey) && k === 'Enter') { ev.preventDefault(); apply(); return; }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const actions = {
    v: () => setTool('select'), r: () => setTool('rect'), p: () => setTool('polygon'), h: () => setTool('pan'),
    t: toggleView, s: () => $('side-by-side').click(), 0: fit, e: toggleType,
    1: () => setMode('blur'), 2: () => setMode('pixelate'), 3: () => setMode('solid'),
    Delete: deleteSelected, Backspace: deleteSelected, Enter: closePolygon,
    Escape: () => { S.drawing = null; S.selected = null; refreshPanel(); draw(); },
    '[': () => setSpanEnd('start'), ']': () => setSpanEnd('end'),
  };
  if (S.video) Object.assign(actions, {
    ' ': play, ArrowRight: () => seek(S.frame + (ev.shiftKey ? 10 : 1)), ArrowLeft: () => seek(S.frame - (ev.shiftKey ? 10 : 1)),
    '.': () => seek(S.frame + 1), ',': () => seek(S.frame - 1), Home: () => seek(0), End: () => seek(S.frames - 1),
  });
  const fn = actions[k];
  if (fn) { ev.preventDefault(); fn(); }
});

// For tests and scripts: image pixels -> page coordinates (what a pointer would need).
window.editor = {
  state: S,
  imageToClient(x, y) { const r = canvas.getBoundingClientRect(); const [sx, sy] = toScreen([x, y]); return [r.left + sx, r.top + sy]; },
  sidecar: toSidecar,
};

(async () => {
  try {
    const data = await api('GET', `/api/jobs/${encodeURIComponent(JOB)}`);
    receive(data, true);
    if (S.video) {
      $('video-bar').hidden = false;
      $('scrubber').max = String(S.frames - 1);
    }
    setTool('select');
    fit();
    await seek(0);
    status(data.ready ? `ready · revision ${S.revision}` : 'processing…');
    setBusy(!data.ready);
    if (!data.ready) {
      const fresh = await waitFor((d) => d.ready);
      if (fresh) { receive(fresh, false); await load(visibleViews()); status(`ready · revision ${S.revision}`); setBusy(false); }
    }
    document.body.dataset.ready = '1';
  } catch (e) {
    status(`cannot open this job: ${e.message}`);
  }
})();
