// The panels around the canvas: each control sends an action, and `render` sets every control from the state.

import { fileOf } from "./api.js";
import { progressText } from "./state.js";

const $ = (id) => document.getElementById(id);

// Set a property only when it differs, so a field being typed in keeps its caret.
function set(element, property, value) {
  if (element[property] !== value) element[property] = value;
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

export function bind(store, { undo, redo, fitView, zoomBy }) {
  const dispatch = (action) => store.dispatch(action);
  for (const radio of document.querySelectorAll("input[name=task]")) {
    radio.addEventListener("change", () => dispatch({ type: "setTask", task: radio.value }));
  }
  for (const radio of document.querySelectorAll("input[name=tool]")) {
    radio.addEventListener("change", () => dispatch({ type: "setTool", tool: radio.value }));
  }
  $("brush-size").addEventListener("input", (e) => dispatch({ type: "setBrush", size: Number(e.target.value) }));
  $("clear-mask").addEventListener("click", () => dispatch({ type: "clearMask" }));
  $("hint-colour").addEventListener("input", (e) => dispatch({ type: "setHintStyle", colour: e.target.value }));
  $("hint-radius").addEventListener("change", (e) => dispatch({ type: "setHintStyle", radius: Number(e.target.value) || 0 }));
  $("clear-hints").addEventListener("click", () => dispatch({ type: "clearHints" }));
  $("reference").addEventListener("change", (e) => {
    const file = e.target.files[0];
    dispatch({ type: "setReference", reference: file ? { name: file.name, file } : null });
  });
  $("clear-reference").addEventListener("click", () => {
    $("reference").value = "";
    dispatch({ type: "setReference", reference: null });
  });
  $("side").addEventListener("change", (e) => dispatch({ type: "setUncrop", changes: { side: e.target.value } }));
  $("ratio").addEventListener("input", (e) => dispatch({ type: "setUncrop", changes: { ratio: Number(e.target.value) } }));
  $("recompress").addEventListener("change", (e) => dispatch({ type: "setJpeg", changes: { recompress: e.target.checked } }));
  $("quality").addEventListener("change", (e) => dispatch({ type: "setJpeg", changes: { quality: Number(e.target.value) } }));
  $("seed").addEventListener("change", (e) => dispatch({ type: "setSampling", changes: { seed: Number(e.target.value) || 0 } }));
  $("num-samples").addEventListener("change", (e) =>
    dispatch({ type: "setSampling", changes: { numSamples: Math.max(1, Number(e.target.value) || 1) } }));
  $("steps").addEventListener("change", (e) => dispatch({ type: "setSampling", changes: { steps: e.target.value } }));
  $("split").addEventListener("input", (e) => dispatch({ type: "setSplit", split: Number(e.target.value) }));
  $("use").addEventListener("click", () => useResult(store));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("fit").addEventListener("click", fitView);
  $("zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("hints").addEventListener("input", (e) => {
    const index = Number(e.target.closest("li").dataset.index);
    dispatch({ type: "setHintColour", index, colour: e.target.value });
  });
  $("hints").addEventListener("click", (e) => {
    if (e.target.tagName === "BUTTON") dispatch({ type: "removeHint", index: Number(e.target.closest("li").dataset.index) });
  });
  $("thumbs").addEventListener("click", (e) => {
    const thumb = e.target.closest("button");
    if (!thumb) return;
    dispatch(thumb.dataset.index === "input" ? { type: "showInput" } : { type: "pick", index: Number(thumb.dataset.index) });
  });
}

// "Use this result": the picked sample, as a file, becomes the photo.
export function useResult(store) {
  const s = store.state;
  if (!s.results || s.run) return;
  const sample = s.results.samples[s.picked];
  store.dispatch({ type: "useResult", file: fileOf(sample.url, sample.name) });
}

export function render(s, store) {
  for (const radio of document.querySelectorAll("input[name=task]")) set(radio, "checked", radio.value === s.task);
  for (const radio of document.querySelectorAll("input[name=tool]")) set(radio, "checked", radio.value === s.tool);
  for (const set_ of document.querySelectorAll("fieldset.task")) set(set_, "hidden", set_.dataset.task !== s.task);
  set($("brush-size"), "value", String(Math.min(s.brush, 200)));
  set($("brush-value"), "textContent", String(s.brush));
  set($("mask-count"), "textContent", s.strokes.length ? plural(s.strokes.length, "stroke") : "no strokes");
  set($("hint-count"), "textContent", s.hints.length ? `(${s.hints.length})` : "");
  set($("hint-colour"), "value", s.hintColour);
  renderHints(s);
  set($("reference-name"), "textContent", s.reference ? s.reference.name : "none");
  set($("clear-reference"), "hidden", !s.reference);
  set($("side"), "value", s.uncrop.side);
  set($("ratio"), "value", String(s.uncrop.ratio));
  set($("ratio-value"), "textContent", s.uncrop.ratio.toFixed(2));
  set($("recompress"), "checked", s.jpeg.recompress);
  set($("num-samples"), "max", String(s.limits.max_samples));
  set($("run"), "disabled", !s.photo || !!s.run);
  set($("run"), "textContent", s.run ? "Running…" : "Run");
  set($("undo"), "disabled", !store.past.length || !!s.run);
  set($("redo"), "disabled", !store.future.length || !!s.run);
  set($("zoom"), "textContent", `${Math.round(s.view.zoom * 100)}%`);
  set($("status"), "textContent", s.run ? progressText(s.run) : s.status.text);
  $("status").classList.toggle("error", !s.run && s.status.error);
  set($("stage-hint"), "hidden", !!(s.photo && s.photo.shown));
  if (s.photo && !s.photo.shown) set($("stage-hint"), "textContent", `${s.photo.name}: this browser cannot show it; Run sends it anyway`);
  const canvas = $("editor");
  canvas.dataset.showing = s.photo && s.photo.shown ? s.view.showing : "nothing";
  canvas.dataset.view = JSON.stringify({ zoom: s.view.zoom, x: s.view.x, y: s.view.y });  // for scripts and tests
  canvas.classList.toggle("painting", s.task === "inpaint" && s.tool !== "box");
  canvas.classList.toggle("clicking", s.task === "colorize" || (s.task === "inpaint" && s.tool === "box"));
  renderStrip(s);
}

function renderHints(s) {
  const list = $("hints");
  if (list.dataset.for === JSON.stringify(s.hints)) return;
  list.dataset.for = JSON.stringify(s.hints);
  list.replaceChildren(...s.hints.map((h, i) => {
    const item = document.createElement("li");
    item.dataset.index = String(i);
    const colour = Object.assign(document.createElement("input"), { type: "color", value: h.colour });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "×", title: "remove" });
    item.append(colour, `${h.x},${h.y}${h.radius ? " r" + h.radius : ""}`, remove);
    return item;
  }));
}

let stripFor = null;

function renderStrip(s) {
  const strip = $("strip");
  set(strip, "hidden", !s.results);
  if (!s.results) {
    stripFor = null;
    return;
  }
  if (stripFor !== s.results) {  // a new run: new thumbnails
    stripFor = s.results;
    const thumb = (index, url, caption) => {
      const button = Object.assign(document.createElement("button"), { type: "button", className: "thumb" });
      button.dataset.index = String(index);
      const img = Object.assign(document.createElement("img"), { src: url || "", alt: caption });
      button.append(img, Object.assign(document.createElement("span"), { textContent: caption }));
      return button;
    };
    $("thumbs").replaceChildren(thumb("input", s.photo.url, "input"),
      ...s.results.samples.map((r, k) => thumb(k, r.url, `sample ${r.sample}`)));
  }
  for (const button of $("thumbs").children) {
    const on = s.view.showing === "result" ? button.dataset.index === String(s.picked) : button.dataset.index === "input";
    button.classList.toggle("picked", on);
    button.setAttribute("aria-selected", String(on));
  }
  const picked = s.results.samples[s.picked];
  set($("download"), "href", picked.url);
  set($("download"), "download", picked.name);
  set($("split"), "value", String(s.view.split));
  set($("use"), "disabled", !!s.run);
}
