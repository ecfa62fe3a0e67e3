// The canvas, drawn from the state alone: the photo (or the picked result in its place, at the same scale),
// the mask from its strokes, colour hints, uncrop's preview, before/after, progress and the brush outline.

import { extent, progressText, uncropExtent } from "./state.js";

const MASK_COLOUR = "#ff2d55";
const BACKGROUND = "#15171b";

// Decoded images by URL; a redraw follows each load.
const images = new Map();
let onLoad = () => {};

export function image(url) {
  let img = images.get(url);
  if (!img) {
    img = new Image();
    img.onload = () => onLoad();
    img.src = url;
    images.set(url, img);
  }
  return img.complete && img.naturalWidth ? img : null;
}

export function forget(url) { images.delete(url); }

// --- the mask: replayed from its strokes, cached while they stay the same ------------------------

let maskCache = { strokes: null, width: 0, height: 0, canvas: null };

function paintStroke(m, stroke) {
  m.globalCompositeOperation = stroke.kind === "eraser" ? "destination-out" : "source-over";
  m.fillStyle = m.strokeStyle = MASK_COLOUR;
  if (stroke.kind === "box") {
    m.fillRect(stroke.x, stroke.y, stroke.w, stroke.h);
    return;
  }
  m.lineCap = m.lineJoin = "round";
  m.lineWidth = stroke.size;
  m.beginPath();
  const [first, ...rest] = stroke.points;
  m.moveTo(first[0], first[1]);
  for (const [x, y] of rest.length ? rest : [first]) m.lineTo(x, y);
  m.stroke();
}

// The box a press and a release span, in whole photo pixels.
export function boxOf(a, b) {
  const x = Math.floor(Math.min(a[0], b[0])), y = Math.floor(Math.min(a[1], b[1]));
  return { kind: "box", x, y, w: Math.ceil(Math.max(a[0], b[0])) - x, h: Math.ceil(Math.max(a[1], b[1])) - y };
}

// The mask of the committed strokes (opaque where inpaint fills), the photo's size.
export function maskCanvas(s) {
  const { width, height } = s.photo;
  if (maskCache.strokes !== s.strokes || maskCache.width !== width || maskCache.height !== height) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const m = canvas.getContext("2d");
    for (const stroke of s.strokes) paintStroke(m, stroke);
    maskCache = { strokes: s.strokes, width, height, canvas };
  }
  return maskCache.canvas;
}

// The mask as the server takes it: white where to fill, black elsewhere; null if nothing is painted.
export function maskBlob(s) {
  const mask = maskCanvas(s);
  const pixels = mask.getContext("2d").getImageData(0, 0, mask.width, mask.height);
  const data = pixels.data;
  let any = false;
  for (let i = 0; i < data.length; i += 4) {
    const v = data[i + 3] >= 128 ? 255 : 0;
    any ||= v > 0;
    data[i] = data[i + 1] = data[i + 2] = v;
    data[i + 3] = 255;
  }
  if (!any) return Promise.resolve(null);
  const out = document.createElement("canvas");
  out.width = mask.width;
  out.height = mask.height;
  out.getContext("2d").putImageData(pixels, 0, 0);
  return new Promise((resolve) => out.toBlob(resolve, "image/png"));
}

// --- drawing ----------------------------------------------------------------------------------------

// `redraw` runs when an image the canvas shows has loaded.
export function onImageLoad(redraw) { onLoad = redraw; }

// The canvas's backing store follows its CSS size and the screen's pixel ratio.
export function resize(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  const w = Math.round(rect.width * dpr), h = Math.round(rect.height * dpr);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  return { width: rect.width, height: rect.height };
}

export function draw(canvas, s) {
  const ctx = canvas.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const e = extent(s);
  if (!e) return;
  const v = s.view;
  const toPhoto = () => ctx.setTransform(dpr * v.zoom, 0, 0, dpr * v.zoom, dpr * v.x, dpr * v.y);
  toPhoto();
  ctx.imageSmoothingEnabled = v.zoom < 2;  // enlarged: whole pixels, so a pixel can be judged
  const photo = image(s.photo.url);
  const result = s.view.showing === "result" && s.results ? s.results.samples[s.picked] : null;
  if (result) {
    drawResult(ctx, s, result, photo, e);
  } else {
    if (s.task === "uncrop") drawUncropPreview(ctx, s);
    if (photo) ctx.drawImage(photo, 0, 0);
    if (s.task === "inpaint") drawMask(ctx, s);
    if (s.task === "colorize") for (const h of s.hints) drawHint(ctx, h, v.zoom);
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  if (s.run) drawProgress(ctx, s, e);
  if (!result && s.task === "inpaint" && s.tool !== "box" && v.pointer && !s.run) drawBrush(ctx, s);
}

function drawResult(ctx, s, result, photo, e) {
  const after = image(result.url);
  const o = s.results.offset;
  if (after) ctx.drawImage(after, -o.x, -o.y);
  const split = s.view.before ? 1 : s.view.split;
  if (split <= 0) return;
  // The input over the left `split` of the extent; what uncrop adds shows as empty there.
  const cut = e.x + split * e.width;
  ctx.save();
  ctx.beginPath();
  ctx.rect(e.x, e.y, cut - e.x, e.height);
  ctx.clip();
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(e.x, e.y, e.width, e.height);
  if (photo) ctx.drawImage(photo, 0, 0);
  ctx.restore();
  if (split < 1) {
    ctx.fillStyle = "#fff";
    ctx.fillRect(cut - 1 / s.view.zoom, e.y, 2 / s.view.zoom, e.height);
  }
}

function drawMask(ctx, s) {
  const d = s.drawing;
  let mask = maskCanvas(s);
  if (d && d.kind !== "box") {  // the stroke in progress on a copy (an eraser takes paint away as it goes)
    const layer = document.createElement("canvas");
    layer.width = mask.width;
    layer.height = mask.height;
    const m = layer.getContext("2d");
    m.drawImage(mask, 0, 0);
    paintStroke(m, d);
    mask = layer;
  }
  ctx.save();
  ctx.globalAlpha = 0.5;
  ctx.drawImage(mask, 0, 0);
  if (d && d.kind === "box") {
    const b = boxOf(d.start, d.end || d.start);
    ctx.fillStyle = MASK_COLOUR;
    ctx.fillRect(b.x, b.y, b.w, b.h);
  }
  ctx.restore();
}

function drawHint(ctx, h, zoom) {
  const r = Math.max(h.radius, 6 / zoom);
  ctx.beginPath();
  ctx.arc(h.x + 0.5, h.y + 0.5, r, 0, 2 * Math.PI);
  ctx.fillStyle = h.colour;
  ctx.fill();
  ctx.lineWidth = 2 / zoom;
  ctx.strokeStyle = "#fff";
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(h.x + 0.5, h.y + 0.5, r + 2 / zoom, 0, 2 * Math.PI);
  ctx.lineWidth = 1 / zoom;
  ctx.strokeStyle = "#000";
  ctx.stroke();
}

// Where uncrop will add pixels: a hatched area around the photo, outlined.
function drawUncropPreview(ctx, s) {
  const p = s.photo;
  const g = uncropExtent(p.width, p.height, s.uncrop.side, s.uncrop.ratio);
  const zoom = s.view.zoom;
  ctx.save();
  ctx.fillStyle = "rgba(64, 156, 255, 0.22)";
  ctx.fillRect(-g.x, -g.y, g.width, g.height);
  ctx.beginPath();
  ctx.rect(-g.x, -g.y, g.width, g.height);
  ctx.clip();
  ctx.strokeStyle = "rgba(64, 156, 255, 0.45)";
  ctx.lineWidth = 1.5 / zoom;
  const step = 14 / zoom;
  ctx.beginPath();
  for (let t = -g.height; t < g.width + g.height; t += step) {
    ctx.moveTo(-g.x + t, -g.y);
    ctx.lineTo(-g.x + t - g.height, -g.y + g.height);
  }
  ctx.stroke();
  ctx.restore();
  ctx.save();
  ctx.setLineDash([6 / zoom, 4 / zoom]);
  ctx.lineWidth = 2 / zoom;
  ctx.strokeStyle = "#409cff";
  ctx.strokeRect(-g.x, -g.y, g.width, g.height);
  ctx.restore();
  ctx.fillStyle = "#cfe4ff";
  ctx.font = `${13 / zoom}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  ctx.fillText(`uncrop to ${g.width}x${g.height}`, -g.x + 8 / zoom, -g.y + 8 / zoom);
}

// A bar and the step count across the bottom of what is shown, the picture dimmed above it.
function drawProgress(ctx, s, e) {
  const v = s.view;
  const x = v.x + e.x * v.zoom, y = v.y + e.y * v.zoom, w = e.width * v.zoom, h = e.height * v.zoom;
  ctx.fillStyle = "rgba(10, 12, 16, 0.45)";
  ctx.fillRect(x, y, w, h);
  const r = s.run;
  const share = r.total ? r.done / r.total : 0;
  const barW = Math.min(w - 32, 360), barX = x + (w - barW) / 2, barY = y + h / 2;
  ctx.fillStyle = "rgba(255, 255, 255, 0.25)";
  ctx.fillRect(barX, barY, barW, 6);
  ctx.fillStyle = "#409cff";
  ctx.fillRect(barX, barY, barW * share, 6);
  ctx.fillStyle = "#fff";
  ctx.font = "600 14px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  ctx.fillText(progressText(r), x + w / 2, barY - 8);
  ctx.textAlign = "start";
}

function drawBrush(ctx, s) {
  const { x, y } = s.view.pointer;
  const r = s.brush / 2;
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
  ctx.beginPath();
  ctx.arc(x, y, r + 1, 0, 2 * Math.PI);
  ctx.stroke();
  ctx.strokeStyle = s.tool === "eraser" ? "#fff" : MASK_COLOUR;
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.stroke();
}
