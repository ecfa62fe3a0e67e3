// palette ui: the editor. The state lives in one Store (state.js); the canvas (canvas.js) and the panels
// (panels.js) are drawn from it after every action; the API client is api.js. This file wires the pointer,
// the keys, opening photos and running a restore to actions.

import * as api from "./api.js";
import { boxOf, draw, forget, maskBlob, onImageLoad, resize } from "./canvas.js";
import { bind, render } from "./panels.js";
import { fitted, resultOffset, Store } from "./state.js";

const $ = (id) => document.getElementById(id);
const store = new Store();
const canvas = $("editor");
const created = new Set();  // object URLs this page made: revoked once no state can show them

// One drawing per animation frame. A view that follows the canvas's size is fitted first (an action, so
// the state says what is shown), then drawn.
let frame = 0;
function redraw() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const room = resize(canvas);
    const s = store.state;
    if (s.view.fit && s.photo) {
      const v = fitted(s, room);
      if (v.zoom !== s.view.zoom || v.x !== s.view.x || v.y !== s.view.y) {
        store.dispatch({ type: "fit", room });  // comes back here through the store's listener
        return;
      }
    }
    draw(canvas, s);
  });
}

store.subscribe((s) => {
  render(s, store);
  redraw();
  const live = store.urls();
  for (const url of created) {
    if (!live.has(url)) {
      URL.revokeObjectURL(url);
      forget(url);
      created.delete(url);
    }
  }
});
onImageLoad(redraw);

const room = () => ({ width: canvas.getBoundingClientRect().width, height: canvas.getBoundingClientRect().height });
const undo = () => store.undo();
const redo = () => store.redo();
const fit = () => store.dispatch({ type: "fit", room: room() });
const zoomBy = (factor, at = { x: room().width / 2, y: room().height / 2 }) =>
  store.dispatch({ type: "zoom", zoom: store.state.view.zoom * factor, at });

// --- photos --------------------------------------------------------------------------------------

async function openPhoto(file) {
  if (!file) return;
  const s = store.state;
  if (file.size > s.limits.max_bytes) {
    store.dispatch({ type: "say", text: `${file.name}: ${(file.size / 2 ** 20).toFixed(1)} MiB is over the server's limit`,
                     error: true });
    return;
  }
  const url = URL.createObjectURL(file);
  created.add(url);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch {
    // The server decodes more formats than a browser shows: the photo can still be sent, but nothing of
    // the previous photo (its mask, hints, results) stays on the canvas.
    store.dispatch({ type: "open", photo: { name: file.name, file, url: null, width: 0, height: 0, shown: false } });
    return;
  }
  store.dispatch({ type: "open", photo: { name: file.name, file, url, width: img.naturalWidth,
                                          height: img.naturalHeight, shown: true } });
}

// --- the pointer on the canvas ------------------------------------------------------------------------

let gesture = null;  // {kind: "paint" | "pan", last} while a button is down
let spaceHeld = false;

function canvasPoint(event) {
  const rect = canvas.getBoundingClientRect();
  return { x: event.clientX - rect.left, y: event.clientY - rect.top };
}

function photoPoint(event) {
  const { x, y } = canvasPoint(event);
  const v = store.state.view;
  return [(x - v.x) / v.zoom, (y - v.y) / v.zoom];
}

function inside([x, y]) {
  const p = store.state.photo;
  return x >= 0 && y >= 0 && x < p.width && y < p.height;
}

canvas.addEventListener("pointerdown", (event) => {
  const s = store.state;
  if (!s.photo || !s.photo.shown || s.run) return;
  canvas.setPointerCapture(event.pointerId);
  const panning = event.button === 1 || spaceHeld || (event.button === 0 && (s.task === "uncrop" || s.task === "jpeg"
                  || s.view.showing === "result"));
  if (panning) {
    gesture = { kind: "pan", last: canvasPoint(event) };
    return;
  }
  if (event.button !== 0) return;
  const p = photoPoint(event);
  if (s.task === "colorize") {
    if (!inside(p)) return;
    const [x, y] = p.map(Math.floor);
    const reach = Math.max(8 / s.view.zoom, 1);
    const near = s.hints.findIndex((h) => Math.hypot(h.x - x, h.y - y) <= Math.max(h.radius, reach));
    store.dispatch(near >= 0 ? { type: "removeHint", index: near }
      : { type: "addHint", hint: { x, y, colour: s.hintColour, radius: s.hintRadius } });
    return;
  }
  gesture = { kind: "paint" };
  store.dispatch({ type: "startStroke", stroke: s.tool === "box" ? { kind: "box", start: p, end: p }
    : { kind: s.tool, size: s.brush / s.view.zoom, points: [p] } });
});

canvas.addEventListener("pointermove", (event) => {
  store.dispatch({ type: "pointer", point: canvasPoint(event) });
  if (!gesture) return;
  if (gesture.kind === "pan") {
    const now = canvasPoint(event);
    store.dispatch({ type: "pan", dx: now.x - gesture.last.x, dy: now.y - gesture.last.y });
    gesture.last = now;
  } else {
    store.dispatch({ type: "extendStroke", point: photoPoint(event) });
  }
});

function endGesture() {
  const d = store.state.drawing;
  if (gesture && gesture.kind === "paint" && d) {
    if (d.kind !== "box") store.dispatch({ type: "addStroke", stroke: d });
    else {
      const box = boxOf(d.start, d.end);
      store.dispatch(box.w > 0 && box.h > 0 ? { type: "addStroke", stroke: box } : { type: "cancelStroke" });
    }
  }
  gesture = null;
}
canvas.addEventListener("pointerup", endGesture);
canvas.addEventListener("pointercancel", () => { gesture = null; store.dispatch({ type: "cancelStroke" }); });
canvas.addEventListener("pointerleave", () => store.dispatch({ type: "pointer", point: null }));
canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  if (store.state.photo) zoomBy(Math.exp(-event.deltaY / 500), canvasPoint(event));
}, { passive: false });
canvas.addEventListener("auxclick", (e) => e.preventDefault());

// --- keys --------------------------------------------------------------------------------------------

const typing = (target) => target.matches("input[type=number], input[type=text], select, textarea");

document.addEventListener("keydown", (event) => {
  const key = event.key;
  const mod = event.ctrlKey || event.metaKey;
  if (mod && key === "Enter") {
    event.preventDefault();
    run();
    return;
  }
  if (typing(event.target)) return;
  if (mod && (key === "z" || key === "Z")) {
    event.preventDefault();
    event.shiftKey ? redo() : undo();
  } else if (mod && (key === "y" || key === "Y")) {
    event.preventDefault();
    redo();
  } else if (mod) {
    return;
  } else if (key === "[" || key === "]") {
    const size = store.state.brush;
    store.dispatch({ type: "setBrush", size: key === "]" ? Math.max(size + 2, size * 1.2) : Math.min(size - 2, size / 1.2) });
  } else if (key === "b" || key === "B") {
    if (!store.state.view.before) store.dispatch({ type: "holdBefore", held: true });
  } else if (key === "f" || key === "F" || key === "0") {
    fit();
  } else if (key === "+" || key === "=") {
    zoomBy(1.25);
  } else if (key === "-") {
    zoomBy(0.8);
  } else if (key === "1") {
    zoomBy(1 / store.state.view.zoom);
  } else if (key === "o" || key === "O") {
    $("photo").click();
  } else if (key === "Escape") {
    gesture = null;
    store.dispatch({ type: "cancelStroke" });
  } else if (key === " ") {
    spaceHeld = true;
    event.preventDefault();
  }
});

document.addEventListener("keyup", (event) => {
  if (event.key === "b" || event.key === "B") store.dispatch({ type: "holdBefore", held: false });
  if (event.key === " ") spaceHeld = false;
});
window.addEventListener("blur", () => { spaceHeld = false; store.dispatch({ type: "holdBefore", held: false }); });

// --- run ----------------------------------------------------------------------------------------------

async function run(event) {
  if (event) event.preventDefault();
  const s = store.state;
  if (!s.photo || s.run) return;
  let mask = null;
  if (s.task === "inpaint") {
    mask = s.photo.shown ? await maskBlob(s) : null;
    if (!mask) {
      store.dispatch({ type: "say", text: "inpaint: paint the part to fill first (brush or box)", error: true });
      return;
    }
  }
  const task = s.task, photo = s.photo, side = s.uncrop.side;
  store.dispatch({ type: "runStart", task });
  let running = true;
  api.poll((p) => {
    if (running) store.dispatch({ type: "runProgress", progress: p.task === task ? p : { waiting: p.waiting } });
  }, () => running);
  try {
    const answer = await api.restore(task, api.form(s, mask));
    const samples = await Promise.all(answer.images.map(async (url, k) => {
      const img = new Image();
      img.src = url;
      await img.decode();
      return { url, name: answer.names[k], seed: answer.seeds[k], sample: answer.samples[k],
               width: img.naturalWidth, height: img.naturalHeight };
    }));
    const offset = photo.shown ? resultOffset(task, side, photo, samples[0].width, samples[0].height) : { x: 0, y: 0 };
    running = false;
    if (store.state.photo !== photo) {  // another photo was opened meanwhile: these results are not its
      store.dispatch({ type: "runFailed", message: `${task}: finished for ${photo.name}, which is no longer open` });
      return;
    }
    store.dispatch({ type: "runDone", results: { task, name: photo.name, samples, seconds: answer.seconds, offset } });
  } catch (error) {
    running = false;
    store.dispatch({ type: "runFailed", message: error.message });
  }
}

// --- wiring ---------------------------------------------------------------------------------------------

function dropTarget(element, onFile) {
  element.addEventListener("dragover", (e) => { e.preventDefault(); element.classList.add("over"); });
  element.addEventListener("dragleave", () => element.classList.remove("over"));
  element.addEventListener("drop", (e) => {
    e.preventDefault();
    e.stopPropagation();
    element.classList.remove("over");
    onFile(e.dataTransfer.files[0]);
  });
}

bind(store, { undo, redo, fitView: fit, zoomBy });
$("photo").addEventListener("change", (e) => { openPhoto(e.target.files[0]); e.target.value = ""; });
$("controls").addEventListener("submit", run);
dropTarget($("stage"), openPhoto);
dropTarget($("reference-drop"), (file) => store.dispatch({ type: "setReference", reference: file ? { name: file.name, file } : null }));
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); openPhoto(e.dataTransfer.files[0]); });
new ResizeObserver(redraw).observe(canvas);
api.info().then((limits) => store.dispatch({ type: "limits", limits })).catch(() => {});
render(store.state, store);
redraw();
