// The editor's state: one plain object, changed only by the named actions below (`reduce`), kept by a
// store with undo and redo as stacks of earlier states. Nothing here touches the page.

export const TASKS = ["colorize", "inpaint", "uncrop", "jpeg"];
export const MAX_ZOOM = 16;
export const MIN_ZOOM = 1 / 32;

export const initial = {
  photo: null,       // {name, file, url, width, height, shown}: `file` is sent; `shown`: the browser decodes it
  task: "colorize",
  tool: "brush",     // inpaint: brush | eraser | box
  brush: 40,         // brush diameter in screen pixels
  strokes: [],       // inpaint's mask: {kind: "brush"|"eraser", size, points: [[x, y], ...]} or {kind: "box", x, y, w, h}
  drawing: null,     // the stroke in progress (not in the mask until the pointer is released)
  hints: [],         // colorize: {x, y, colour, radius} in photo pixels
  hintColour: "#c83c3c",
  hintRadius: 3,
  reference: null,   // colorize: {name, file}
  uncrop: { side: "right", ratio: 0.5 },
  jpeg: { recompress: false, quality: 10 },
  sampling: { seed: 0, numSamples: 1, steps: "" },
  results: null,     // {task, name, samples: [{url, name, seed, sample, width, height}], seconds, offset: {x, y}}
  picked: 0,         // the sample shown and used
  view: {
    zoom: 1, x: 0, y: 0,  // screen = photo * zoom + (x, y), in CSS pixels of the canvas
    fit: true,            // zoom and pan follow the canvas's size
    showing: "input",     // "input": the photo with its mask, hints or uncrop preview; "result": the picked sample
    split: 0,             // before/after: the share of the width, from the left, that shows the input
    before: false,        // the compare key is held: the input everywhere
    pointer: null,        // {x, y} in CSS pixels of the canvas, for the brush outline
  },
  run: null,         // {task, done, total, waiting} while a restore runs
  status: { text: "Open or drop a photo.", error: false },
  limits: { max_bytes: Infinity, max_samples: 8 },
};

// The part of the state that undo and redo step through; the rest (view, run, status, settings) stays.
const DOCUMENT = ["photo", "strokes", "hints", "results", "picked"];
// Actions that change the document and can be undone.
const UNDOABLE = new Set(["addStroke", "addHint", "removeHint", "setHintColour", "clearMask", "clearHints",
                          "runDone", "useResult"]);

const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const edited = (s) => ({ ...s.view, showing: "input", before: false });

// The grown canvas uncrop makes: the photo's size / (1 - ratio) on the side(s) named, and where the photo
// sits in it. The server's rounding may differ by a pixel; results are placed from their real size.
export function uncropExtent(width, height, side, ratio) {
  if (side === "all") {
    const scale = Math.sqrt(1 - ratio);
    const w = Math.round(width / scale), h = Math.round(height / scale);
    return { width: w, height: h, x: Math.floor((w - width) / 2), y: Math.floor((h - height) / 2) };
  }
  if (side === "left" || side === "right") {
    const w = Math.round(width / (1 - ratio));
    return { width: w, height, x: side === "left" ? w - width : 0, y: 0 };
  }
  const h = Math.round(height / (1 - ratio));
  return { width, height: h, x: 0, y: side === "top" ? h - height : 0 };
}

// Where a result sits relative to the photo it came from (uncrop grows the canvas; the others keep it).
export function resultOffset(task, side, photo, width, height) {
  if (task !== "uncrop") return { x: 0, y: 0 };
  const dx = width - photo.width, dy = height - photo.height;
  if (side === "left") return { x: dx, y: 0 };
  if (side === "top") return { x: 0, y: dy };
  if (side === "all") return { x: Math.floor(dx / 2), y: Math.floor(dy / 2) };
  return { x: 0, y: 0 };
}

// The rectangle (photo pixels) the canvas shows: the photo, the result in place, or uncrop's preview.
export function extent(s) {
  const p = s.photo;
  if (!p || !p.shown) return null;
  if (s.view.showing === "result" && s.results) {
    const r = s.results.samples[s.picked];
    const o = s.results.offset;
    return { x: Math.min(0, -o.x), y: Math.min(0, -o.y), width: Math.max(r.width, p.width),
             height: Math.max(r.height, p.height) };
  }
  if (s.task === "uncrop") {
    const e = uncropExtent(p.width, p.height, s.uncrop.side, s.uncrop.ratio);
    return { x: -e.x, y: -e.y, width: e.width, height: e.height };
  }
  return { x: 0, y: 0, width: p.width, height: p.height };
}

// Zoom and pan that show the whole extent in a canvas of `room` CSS pixels, a margin around it.
export function fitted(s, room) {
  const e = extent(s);
  if (!e || !room.width || !room.height) return s.view;
  const zoom = clamp(Math.min((room.width - 48) / e.width, (room.height - 48) / e.height), MIN_ZOOM, 8);
  return { ...s.view, zoom, x: (room.width - e.width * zoom) / 2 - e.x * zoom,
           y: (room.height - e.height * zoom) / 2 - e.y * zoom, fit: true };
}

function zoomAround(view, zoom, at) {
  const z = clamp(zoom, MIN_ZOOM, MAX_ZOOM);
  return { ...view, zoom: z, x: at.x - (at.x - view.x) * (z / view.zoom), y: at.y - (at.y - view.y) * (z / view.zoom),
           fit: false };
}

// What a running restore is doing, in words (the status line and the canvas say it).
export function progressText(run) {
  if (run.waiting && !run.total) return `${run.task}: waiting for the restore before it`;
  return run.total ? `${run.task}: step ${run.done} of ${run.total}` : `${run.task}: starting`;
}

// The actions: (state, action) -> the next state. An unknown action is a bug.
export function reduce(s, a) {
  switch (a.type) {
    case "open":  // a new photo: its mask, hints and results go (and the history with them, see Store)
      return { ...s, photo: a.photo, strokes: [], drawing: null, hints: [], results: null, picked: 0, run: null,
               view: { ...s.view, showing: "input", split: 0, fit: true },
               status: a.photo.shown ? { text: `${a.photo.name}: ${a.photo.width}x${a.photo.height}`, error: false }
                 : { text: `${a.photo.name}: this browser cannot show it; Run sends it anyway`, error: false } };
    case "setTask": return { ...s, task: a.task, view: { ...s.view, showing: s.results ? s.view.showing : "input" } };
    case "setTool": return { ...s, tool: a.tool };
    case "setBrush": return { ...s, brush: clamp(Math.round(a.size), 2, 400) };
    case "startStroke": return { ...s, drawing: a.stroke, view: edited(s) };
    case "extendStroke": {
      const d = s.drawing;
      if (!d) return s;
      return { ...s, drawing: d.kind === "box" ? { ...d, end: a.point } : { ...d, points: [...d.points, a.point] } };
    }
    case "cancelStroke": return { ...s, drawing: null };
    case "addStroke": return { ...s, strokes: [...s.strokes, a.stroke], drawing: null };
    case "clearMask": return s.strokes.length ? { ...s, strokes: [], view: edited(s) } : s;
    case "addHint": return { ...s, hints: [...s.hints, a.hint], view: edited(s) };
    case "removeHint": return { ...s, hints: s.hints.filter((_, i) => i !== a.index), view: edited(s) };
    case "setHintColour":
      return { ...s, hints: s.hints.map((h, i) => (i === a.index ? { ...h, colour: a.colour } : h)) };
    case "clearHints": return s.hints.length ? { ...s, hints: [], view: edited(s) } : s;
    case "setHintStyle": return { ...s, hintColour: a.colour ?? s.hintColour, hintRadius: a.radius ?? s.hintRadius };
    case "setReference": return { ...s, reference: a.reference };
    case "setUncrop": return { ...s, uncrop: { ...s.uncrop, ...a.changes } };
    case "setJpeg": return { ...s, jpeg: { ...s.jpeg, ...a.changes } };
    case "setSampling": return { ...s, sampling: { ...s.sampling, ...a.changes } };
    case "runStart": return { ...s, run: { task: a.task, done: 0, total: 0, waiting: 0 },
                              status: { text: `${a.task}: starting`, error: false } };
    case "runProgress": return s.run ? { ...s, run: { ...s.run, ...a.progress } } : s;
    case "runDone": return { ...s, run: null, results: a.results, picked: 0,
                             view: { ...s.view, showing: "result", split: 0, before: false },
                             status: { text: `${a.results.task}: ${a.results.samples.length} sample(s) in ` +
                                             `${a.results.seconds.toFixed(1)} s`, error: false } };
    case "runFailed": return { ...s, run: null, status: { text: a.message, error: true } };
    case "pick": return { ...s, picked: a.index, view: { ...s.view, showing: "result" } };
    case "showInput": return { ...s, view: { ...s.view, showing: "input" } };
    case "useResult": {  // the picked sample becomes the photo: inpaint, then colorize the result
      const r = s.results.samples[s.picked];
      return { ...s, photo: { name: r.name, file: a.file, url: r.url, width: r.width, height: r.height, shown: true },
               strokes: [], hints: [], results: null, picked: 0, view: { ...s.view, showing: "input", fit: true },
               status: { text: `${r.name} is the photo now`, error: false } };
    }
    case "setSplit": return { ...s, view: { ...s.view, split: clamp(a.split, 0, 1) } };
    case "holdBefore": return { ...s, view: { ...s.view, before: a.held } };
    case "fit": return { ...s, view: fitted(s, a.room) };
    case "zoom": return { ...s, view: zoomAround(s.view, a.zoom, a.at) };
    case "pan": return { ...s, view: { ...s.view, x: s.view.x + a.dx, y: s.view.y + a.dy, fit: false } };
    case "pointer": return { ...s, view: { ...s.view, pointer: a.point } };
    case "say": return { ...s, status: { text: a.text, error: !!a.error } };
    case "limits": return { ...s, limits: a.limits };
    default: throw new Error(`unknown action ${a.type}`);
  }
}

const documentOf = (s) => Object.fromEntries(DOCUMENT.map((k) => [k, s[k]]));

// The state, its history, and who is told of a change. Undo puts back an earlier document (photo, mask,
// hints, results) and keeps the view and settings as they are.
export class Store {
  constructor(state = initial) {
    this.state = state;
    this.past = [];
    this.future = [];
    this.listeners = [];
  }

  subscribe(listener) { this.listeners.push(listener); }

  dispatch(action) {
    const next = reduce(this.state, action);
    if (next === this.state) return;
    if (action.type === "open") {
      this.past = [];
      this.future = [];
    } else if (UNDOABLE.has(action.type)) {
      this.past = [...this.past.slice(-199), documentOf(this.state)];
      this.future = [];
    }
    this.set(next);
  }

  undo() { this.step(this.past, this.future); }
  redo() { this.step(this.future, this.past); }

  step(from, to) {
    if (!from.length || this.state.run) return;
    to.push(documentOf(this.state));
    const document = from.pop();
    const showing = document.results ? this.state.view.showing : "input";
    this.set({ ...this.state, ...document, drawing: null, view: { ...this.state.view, showing } });
  }

  // Every object URL the state or its history can still show; the others may be revoked.
  urls() {
    return new Set([this.state, ...this.past, ...this.future].map((d) => d.photo && d.photo.url).filter(Boolean));
  }

  set(state) {
    this.state = state;
    for (const listener of this.listeners) listener(state, this);
  }
}
