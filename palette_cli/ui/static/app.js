// palette ui: open a photo, paint a mask or click colour hints, POST it to /api/<task>, show the samples.
// Everything is in the photo's own pixels: the editor canvas has the photo's size and CSS scales it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  file: null,        // the photo as opened (sent as it is)
  image: null,       // the decoded photo, drawn under the overlays
  url: null,         // its object URL, shown beside the results
  mask: null,        // a canvas of the photo's size: opaque where inpaint fills
  hints: [],         // {x, y, colour, radius} in photo pixels
  reference: null,   // a File
  stroke: null,      // the pointer gesture in progress
  limits: { max_bytes: Infinity, max_samples: 8 },
};
const editor = $("editor");
const ctx = editor.getContext("2d");

function task() { return document.querySelector("input[name=task]:checked").value; }
function tool() { return document.querySelector("input[name=tool]:checked").value; }

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// --- the photo --------------------------------------------------------------------------------

async function openPhoto(file) {
  if (!file) return;
  if (file.size > state.limits.max_bytes) {
    say(`${file.name}: ${(file.size / 2 ** 20).toFixed(1)} MiB is over the server's limit`, true);
    return;
  }
  state.file = file;
  state.hints = [];
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.src = url;
  try {
    await image.decode();
  } catch {
    // The server decodes more formats than a browser shows: the photo can still be sent.
    state.image = null;
    editor.hidden = true;
    $("stage-hint").hidden = false;
    $("stage-hint").textContent = `${file.name}: this browser cannot show it; Run sends it anyway`;
    $("run").disabled = false;
    say(`${file.name} opened (not shown)`);
    return;
  }
  if (state.url) URL.revokeObjectURL(state.url);
  Object.assign(state, { image, url });
  editor.width = image.naturalWidth;
  editor.height = image.naturalHeight;
  state.mask = document.createElement("canvas");
  state.mask.width = editor.width;
  state.mask.height = editor.height;
  editor.hidden = false;
  $("stage-hint").hidden = true;
  $("run").disabled = false;
  renderHints();
  fit();
  draw();
  say(`${file.name}: ${editor.width}x${editor.height}`);
}

// Show the photo as large as the stage allows (small photos scaled up, so a brush can reach a pixel).
function fit() {
  if (!state.image) return;
  const stage = $("stage").getBoundingClientRect();
  const room = Math.min((stage.width - 16) / editor.width, (0.65 * window.innerHeight) / editor.height);
  const s = Math.max(Math.min(room, 8), 0.05);
  editor.style.width = `${Math.round(editor.width * s)}px`;
  editor.style.height = `${Math.round(editor.height * s)}px`;
}

function draw(box = null) {
  if (!state.image) return;
  ctx.globalAlpha = 1;
  ctx.drawImage(state.image, 0, 0);
  if (task() === "inpaint") {
    ctx.globalAlpha = 0.55;
    ctx.drawImage(state.mask, 0, 0);
    ctx.globalAlpha = 1;
    if (box) {
      ctx.strokeStyle = "#ff2d55";
      ctx.lineWidth = Math.max(1, scale());
      ctx.strokeRect(box.x, box.y, box.w, box.h);
    }
  }
  if (task() === "colorize") state.hints.forEach(drawDot);
}

function drawDot(hint) {
  const r = Math.max(hint.radius, 5 * scale());
  ctx.beginPath();
  ctx.arc(hint.x + 0.5, hint.y + 0.5, r, 0, 2 * Math.PI);
  ctx.fillStyle = hint.colour;
  ctx.fill();
  ctx.lineWidth = Math.max(1, 1.5 * scale());
  ctx.strokeStyle = "#fff";
  ctx.stroke();
  ctx.beginPath();
  ctx.arc(hint.x + 0.5, hint.y + 0.5, r + ctx.lineWidth, 0, 2 * Math.PI);
  ctx.strokeStyle = "#000";
  ctx.stroke();
}

// Photo pixels per CSS pixel of the editor.
function scale() {
  const rect = editor.getBoundingClientRect();
  return rect.width ? editor.width / rect.width : 1;
}

function photoPoint(event) {
  const rect = editor.getBoundingClientRect();
  const s = scale();
  const x = Math.min(editor.width - 1, Math.max(0, Math.floor((event.clientX - rect.left) * s)));
  const y = Math.min(editor.height - 1, Math.max(0, Math.floor((event.clientY - rect.top) * s)));
  return { x, y };
}

// --- inpaint: brush, eraser, box ---------------------------------------------------------------

function paint(from, to) {
  const m = state.mask.getContext("2d");
  m.globalCompositeOperation = tool() === "eraser" ? "destination-out" : "source-over";
  m.strokeStyle = m.fillStyle = "#ff2d55";
  m.lineCap = m.lineJoin = "round";
  m.lineWidth = Number($("brush-size").value) * scale();
  m.beginPath();
  m.moveTo(from.x + 0.5, from.y + 0.5);
  m.lineTo(to.x + 0.5, to.y + 0.5);
  m.stroke();
}

function boxOf(a, b) {
  return { x: Math.min(a.x, b.x), y: Math.min(a.y, b.y), w: Math.abs(b.x - a.x) + 1, h: Math.abs(b.y - a.y) + 1 };
}

function maskBlob() {
  // White where the mask is painted, black elsewhere: the server's mask format (white = fill).
  const { width, height } = state.mask;
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  const pixels = state.mask.getContext("2d").getImageData(0, 0, width, height);
  const data = pixels.data;
  let any = false;
  for (let i = 0; i < data.length; i += 4) {
    const v = data[i + 3] >= 128 ? 255 : 0;
    any ||= v > 0;
    data[i] = data[i + 1] = data[i + 2] = v;
    data[i + 3] = 255;
  }
  out.getContext("2d").putImageData(pixels, 0, 0);
  return any ? new Promise((resolve) => out.toBlob(resolve, "image/png")) : Promise.resolve(null);
}

// --- colorize: hints and a reference -----------------------------------------------------------

function hintAt(p) {
  const reach = 8 * scale();
  return state.hints.findIndex((h) => Math.hypot(h.x - p.x, h.y - p.y) <= Math.max(h.radius, reach));
}

function renderHints() {
  const list = $("hints");
  list.replaceChildren(...state.hints.map((h, i) => {
    const item = document.createElement("li");
    const colour = Object.assign(document.createElement("input"), { type: "color", value: h.colour });
    colour.addEventListener("input", () => { h.colour = colour.value; draw(); });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "×" });
    remove.title = "remove this hint";
    remove.addEventListener("click", () => { state.hints.splice(i, 1); renderHints(); draw(); });
    item.append(colour, `${h.x},${h.y}${h.radius ? " r" + h.radius : ""}`, remove);
    return item;
  }));
}

function hintLines() {
  return state.hints.map((h) => `${h.x},${h.y},${h.colour}${h.radius ? "," + h.radius : ""}`).join("\n");
}

function setReference(file) {
  state.reference = file || null;
  $("reference-name").textContent = file ? file.name : "none (or drop one here)";
  $("clear-reference").hidden = !file;
}

// --- pointer gestures on the editor -------------------------------------------------------------

editor.addEventListener("pointerdown", (event) => {
  if (!state.image || event.button !== 0) return;
  const p = photoPoint(event);
  if (task() === "colorize") {
    const i = hintAt(p);
    if (i >= 0) state.hints.splice(i, 1);
    else state.hints.push({ ...p, colour: $("hint-colour").value, radius: Number($("hint-radius").value) || 0 });
    renderHints();
    draw();
    return;
  }
  if (task() !== "inpaint") return;
  editor.setPointerCapture(event.pointerId);
  state.stroke = { start: p, last: p };
  if (tool() !== "box") paint(p, p);
  draw();
});

editor.addEventListener("pointermove", (event) => {
  if (!state.stroke) return;
  const p = photoPoint(event);
  if (tool() === "box") {
    draw(boxOf(state.stroke.start, p));
  } else {
    paint(state.stroke.last, p);
    draw();
  }
  state.stroke.last = p;
});

function endStroke(event) {
  if (!state.stroke) return;
  if (tool() === "box") {
    const b = boxOf(state.stroke.start, photoPoint(event));
    const m = state.mask.getContext("2d");
    m.globalCompositeOperation = "source-over";
    m.fillStyle = "#ff2d55";
    m.fillRect(b.x, b.y, b.w, b.h);
  }
  state.stroke = null;
  draw();
}
editor.addEventListener("pointerup", endStroke);
editor.addEventListener("pointercancel", () => { state.stroke = null; draw(); });

// --- run ------------------------------------------------------------------------------------------

async function form() {
  const data = new FormData();
  data.append("image", state.file, state.file.name);
  for (const [name, id] of [["seed", "seed"], ["num_samples", "num-samples"], ["steps", "steps"]]) {
    if ($(id).value !== "") data.append(name, $(id).value);
  }
  const t = task();
  if (t === "inpaint") {
    const mask = state.mask && await maskBlob();
    if (!mask) throw new Error("paint the part to fill first (brush or box)");
    data.append("mask", mask, "mask.png");
  } else if (t === "uncrop") {
    data.append("side", $("side").value);
    data.append("ratio", $("ratio").value);
  } else if (t === "jpeg") {
    if ($("recompress").checked) data.append("quality", $("quality").value);
  } else {
    if (state.hints.length) data.append("hints", hintLines());
    if (state.reference) data.append("reference", state.reference, state.reference.name);
  }
  return data;
}

async function pollProgress(t, running) {
  while (running.value) {
    try {
      const p = await (await fetch("/api/progress")).json();
      if (p.waiting && p.task !== t) say(`${t}: waiting for the restore before it`);
      else if (p.total) {
        $("progress").max = p.total;
        $("progress").value = p.done;
        say(`${t}: step ${p.done} of ${p.total}`);
      }
    } catch { /* the answer to the run itself reports problems */ }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

async function run(event) {
  event.preventDefault();
  if (!state.file) return;
  const t = task();
  const running = { value: true };
  $("run").disabled = true;
  $("progress").hidden = false;
  $("progress").removeAttribute("value");
  try {
    const body = await form();
    say(`${t}: starting`);
    pollProgress(t, running);
    const response = await fetch(`/api/${t}`, { method: "POST", body });
    const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    showResults(t, answer);
    say(`${t}: ${answer.images.length} sample(s) in ${answer.seconds.toFixed(1)} s`);
  } catch (error) {
    say(error.message, true);
  } finally {
    running.value = false;
    $("run").disabled = false;
    $("progress").hidden = true;
  }
}

function figure(src, caption, download) {
  const fig = document.createElement("figure");
  const img = Object.assign(document.createElement("img"), { src, alt: caption });
  const cap = Object.assign(document.createElement("figcaption"), { textContent: caption + " " });
  if (download) {
    img.className = "result";
    const link = Object.assign(document.createElement("a"), { href: download.href, download: download.name,
                                                             textContent: "download PNG" });
    cap.append(link);
  }
  fig.append(img, cap);
  return fig;
}

function blobUrl(dataUrl) {
  const bytes = Uint8Array.from(atob(dataUrl.split(",")[1]), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function showResults(t, answer) {
  const block = document.createElement("article");
  block.className = "run";
  const title = Object.assign(document.createElement("h2"), {
    textContent: `${t} · ${state.file.name} · seed ${answer.seeds[0]} · ${answer.seconds.toFixed(1)} s` });
  const row = document.createElement("div");
  row.className = "images";
  if (state.url) row.append(figure(state.url, "input"));
  answer.images.forEach((src, k) => {
    row.append(figure(src, `sample ${answer.samples[k]}`, { href: blobUrl(src), name: answer.names[k] }));
  });
  block.append(title, row);
  $("results").prepend(block);
}

// --- wiring -----------------------------------------------------------------------------------------

function showTask() {
  for (const set of document.querySelectorAll("fieldset.task")) set.hidden = set.dataset.task !== task();
  editor.style.cursor = task() === "jpeg" || task() === "uncrop" ? "default" : "crosshair";
  draw();
}

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

$("photo").addEventListener("change", (e) => openPhoto(e.target.files[0]));
$("reference").addEventListener("change", (e) => setReference(e.target.files[0]));
$("clear-reference").addEventListener("click", () => { $("reference").value = ""; setReference(null); });
$("clear-mask").addEventListener("click", () => {
  if (state.mask) state.mask.getContext("2d").clearRect(0, 0, state.mask.width, state.mask.height);
  draw();
});
$("clear-hints").addEventListener("click", () => { state.hints = []; renderHints(); draw(); });
$("ratio").addEventListener("input", () => { $("ratio-value").textContent = Number($("ratio").value).toFixed(2); });
for (const radio of document.querySelectorAll("input[name=task]")) radio.addEventListener("change", showTask);
$("controls").addEventListener("submit", run);
dropTarget($("stage"), openPhoto);
dropTarget($("reference-drop"), setReference);
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => { e.preventDefault(); openPhoto(e.dataTransfer.files[0]); });
window.addEventListener("resize", () => { fit(); draw(); });
fetch("/api/info").then((r) => r.json()).then((info) => {
  state.limits = info;
  $("num-samples").max = info.max_samples;
}).catch(() => {});
showTask();
