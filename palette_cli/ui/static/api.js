// The server's API: GET /api/info, GET /api/progress, POST /api/<task> (multipart/form-data).

export async function info() {
  const response = await fetch("/api/info");
  return response.json();
}

// The form of a restore, from the state and the mask the canvas made (inpaint).
export function form(s, mask) {
  const data = new FormData();
  data.append("image", s.photo.file, s.photo.name);
  data.append("seed", String(s.sampling.seed));
  data.append("num_samples", String(s.sampling.numSamples));
  if (s.sampling.steps !== "") data.append("steps", String(s.sampling.steps));
  if (s.task === "inpaint") {
    data.append("mask", mask, "mask.png");
  } else if (s.task === "uncrop") {
    data.append("side", s.uncrop.side);
    data.append("ratio", String(s.uncrop.ratio));
  } else if (s.task === "jpeg") {
    if (s.jpeg.recompress) data.append("quality", String(s.jpeg.quality));
  } else {
    const lines = s.hints.map((h) => `${h.x},${h.y},${h.colour}${h.radius ? "," + h.radius : ""}`);
    if (lines.length) data.append("hints", lines.join("\n"));
    if (s.reference) data.append("reference", s.reference.file, s.reference.name);
  }
  return data;
}

// POST the form; the answer's JSON, or an Error with the server's message.
export async function restore(task, data) {
  const response = await fetch(`/api/${task}`, { method: "POST", body: data });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    throw new Error((answer.error || `HTTP ${response.status}`) + (retry ? ` (retry in ${retry} s)` : ""));
  }
  return answer;
}

// Call `report(progress)` every 250 ms until `running()` is false.
export async function poll(report, running) {
  while (running()) {
    try {
      report(await (await fetch("/api/progress")).json());
    } catch { /* the restore's own answer reports problems */ }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// A result's data URL as a File, so it can be sent as the next photo (decoded here: the page's policy
// lets it fetch from its own server only).
export function fileOf(url, name) {
  const bytes = Uint8Array.from(atob(url.slice(url.indexOf(",") + 1)), (c) => c.charCodeAt(0));
  return new File([bytes], name, { type: "image/png" });
}
