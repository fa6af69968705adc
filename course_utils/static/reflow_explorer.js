// The reflow explorer's renderer (course_utils.widgets.ReflowExplorer), an anywidget ES module.
// The same file runs live in Jupyter (anywidget's model) and in the kernel-free page of
// `ReflowExplorer.to_html()` (a stand-in model with get/set/on/off/save_changes). No libraries.

const GROUP = ["#0072B2", "#E69F00"]; // Okabe-Ito blue and orange: the two colour groups
const DATA = "#009E73";
const NOISE = "#8c8c8c";
const ERROR = "#CC79A7"; // Okabe-Ito reddish purple: apart from both group colours
const PLOT = 440; // CSS pixels, the square plot
const PANEL = 280; // CSS pixels, legend and bars to its right
const PAD = 8;
const PLAY_SECONDS = 3;

function decode(a) {
  if (!a) return null;
  const bytes = Uint8Array.from(atob(a.b64), (c) => c.charCodeAt(0));
  const out = a.dtype === "uint8" ? bytes : new Float32Array(bytes.buffer);
  out.shape = a.shape;
  return out;
}

function decodeToy(toy) {
  return {
    name: toy.name,
    groupNames: toy.group_names,
    bounds: toy.bounds,
    x0: decode(toy.x0),
    groups: decode(toy.groups),
    t: decode(toy.t),
    data: decode(toy.data),
    noise: decode(toy.noise),
    rounds: toy.rounds.map((r) => ({
      k: r.k,
      label: r.label,
      chordEnd: decode(r.chord_end),
      paths: decode(r.paths),
      straightness: r.straightness,
      euler: Object.fromEntries(Object.entries(r.euler).map(([n, e]) => [n, { path: decode(e.path), error: e.error }])),
    })),
  };
}

// the readout line; Python's widgets.readout_text builds the same text
export function readoutText(toy, k, t, steps) {
  const r = toy.rounds[k];
  const parts = [r.label];
  if (k === 0) parts.push("straight chords, which cross");
  else {
    parts.push(`S = ${r.straightness.toFixed(4)}`);
    const e = steps ? r.euler[String(steps)] : undefined;
    if (e) parts.push(`${steps} Euler step${steps > 1 ? "s" : ""}: mean error ${e.error.toFixed(3)}`);
  }
  parts.push(`t = ${t.toFixed(2)}`);
  return parts.join(" · ");
}

// particle i at time t: on the chord for round 0, between the path's grid points otherwise
function position(toy, r, t, i, n) {
  if (!r.paths) {
    return [(1 - t) * toy.x0[2 * i] + t * r.chordEnd[2 * i], (1 - t) * toy.x0[2 * i + 1] + t * r.chordEnd[2 * i + 1]];
  }
  const g = toy.t;
  let j = 0;
  while (j < g.length - 2 && g[j + 1] <= t) j++;
  const w = (t - g[j]) / (g[j + 1] - g[j]);
  const a = (j * n + i) * 2;
  const b = ((j + 1) * n + i) * 2;
  return [(1 - w) * r.paths[a] + w * r.paths[b], (1 - w) * r.paths[a + 1] + w * r.paths[b + 1]];
}

function control(parent, label, input) {
  const wrap = document.createElement("label");
  wrap.style.cssText = "display: inline-flex; align-items: center; gap: 4px; margin-right: 10px;";
  wrap.append(label, input);
  parent.append(wrap);
  return input;
}

function render({ model, el }) {
  let toys = model.get("payload").toys.map(decodeToy);
  let playing = false;
  let frame = null;
  let last = null;
  let localT = model.get("t");

  const root = document.createElement("div");
  root.className = "reflow-explorer";
  root.style.cssText = "font: 13px system-ui, sans-serif; color: #222; max-width: 100%;";
  const bar = document.createElement("div");
  bar.className = "controls";
  bar.style.cssText = "display: flex; flex-wrap: wrap; align-items: center; row-gap: 6px; margin: 4px 0 6px;";

  const toySel = document.createElement("select");
  toySel.name = "toy";
  for (const toy of toys) toySel.append(new Option(toy.name, toy.name));
  if (toys.length > 1) control(bar, "toy", toySel);

  const roundIn = document.createElement("input");
  Object.assign(roundIn, { type: "range", name: "round", min: 0, step: 1 });
  const roundOut = document.createElement("output");
  roundOut.style.minWidth = "1.2em";
  control(bar, "round", roundIn).after(roundOut);

  const tIn = document.createElement("input");
  Object.assign(tIn, { type: "range", name: "t", min: 0, max: 1, step: 0.01 });
  const tOut = document.createElement("output");
  tOut.style.minWidth = "2.4em";
  control(bar, "time t", tIn).after(tOut);
  const play = document.createElement("button");
  Object.assign(play, { type: "button", name: "play", textContent: "▶ play" });
  play.setAttribute("aria-label", "play or pause the time t");
  play.style.marginRight = "10px";
  bar.append(play);

  const stepsSel = document.createElement("select");
  stepsSel.name = "steps";
  stepsSel.append(new Option("off", "0"));
  for (const n of model.get("payload").euler_steps) stepsSel.append(new Option(String(n), String(n)));
  control(bar, "Euler steps", stepsSel);

  const chordsIn = document.createElement("input");
  Object.assign(chordsIn, { type: "checkbox", name: "chords" });
  control(bar, "chords", chordsIn);
  const pathsIn = document.createElement("input");
  Object.assign(pathsIn, { type: "checkbox", name: "paths" });
  control(bar, "paths", pathsIn);

  const canvas = document.createElement("canvas");
  // at most the width of the page: a narrower output area scales the drawing down instead of scrolling
  canvas.style.cssText = `width: ${PLOT + PANEL}px; max-width: 100%; height: auto; aspect-ratio: ${PLOT + PANEL} / ${PLOT}; display: block;`;
  canvas.setAttribute("role", "img");
  const readout = document.createElement("div");
  readout.className = "readout";
  readout.setAttribute("aria-live", "polite");
  readout.style.cssText = "margin-top: 6px; font-variant-numeric: tabular-nums;";
  root.append(bar, canvas, readout);
  el.append(root);

  const ctx = canvas.getContext("2d");

  function currentToy() {
    return toys.find((toy) => toy.name === model.get("toy")) || toys[0];
  }

  function sizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round((PLOT + PANEL) * dpr);
    canvas.height = Math.round(PLOT * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function syncInputs() {
    const toy = currentToy();
    toySel.value = toy.name;
    roundIn.max = toy.rounds.length - 1;
    roundIn.value = model.get("round");
    roundOut.value = String(model.get("round"));
    tIn.value = localT;
    tOut.value = localT.toFixed(2);
    stepsSel.value = String(model.get("steps"));
    chordsIn.checked = model.get("show_chords");
    pathsIn.checked = model.get("show_paths");
  }

  function draw() {
    const toy = currentToy();
    const k = Math.min(model.get("round"), toy.rounds.length - 1);
    const r = toy.rounds[k];
    const t = localT;
    const steps = model.get("steps");
    const n = toy.x0.length / 2;
    const [x0, x1, y0, y1] = toy.bounds;
    const sx = (x) => PAD + ((x - x0) / (x1 - x0)) * (PLOT - 2 * PAD);
    const sy = (y) => PLOT - PAD - ((y - y0) / (y1 - y0)) * (PLOT - 2 * PAD);

    ctx.clearRect(0, 0, PLOT + PANEL, PLOT);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, PLOT + PANEL, PLOT);
    ctx.strokeStyle = "#ccc";
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, 0.5, PLOT - 1, PLOT - 1);
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, PLOT, PLOT);
    ctx.clip();

    const cloud = (pts, colour, alpha, radius) => {
      ctx.fillStyle = colour;
      ctx.globalAlpha = alpha;
      for (let i = 0; i < pts.length; i += 2) {
        ctx.beginPath();
        ctx.arc(sx(pts[i]), sy(pts[i + 1]), radius, 0, 2 * Math.PI);
        ctx.fill();
      }
      ctx.globalAlpha = 1;
    };
    cloud(toy.noise, NOISE, 0.25, 1.5);
    cloud(toy.data, DATA, 0.45, 1.8);

    if (model.get("show_chords") || (!r.paths && model.get("show_paths"))) {
      ctx.lineWidth = 0.8;
      ctx.globalAlpha = 0.35;
      ctx.setLineDash(r.paths ? [3, 3] : []);
      for (let i = 0; i < n; i++) {
        ctx.strokeStyle = GROUP[toy.groups[i]];
        ctx.beginPath();
        ctx.moveTo(sx(toy.x0[2 * i]), sy(toy.x0[2 * i + 1]));
        ctx.lineTo(sx(r.chordEnd[2 * i]), sy(r.chordEnd[2 * i + 1]));
        ctx.stroke();
      }
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
    }

    // particle i's polyline through a (steps, n, 2) array stored flat
    const strokePath = (arr, steps, i) => {
      ctx.beginPath();
      for (let j = 0; j < steps; j++) {
        const a = (j * n + i) * 2;
        if (j === 0) ctx.moveTo(sx(arr[a]), sy(arr[a + 1]));
        else ctx.lineTo(sx(arr[a]), sy(arr[a + 1]));
      }
      ctx.stroke();
    };
    if (r.paths && model.get("show_paths")) {
      const T = toy.t.length;
      ctx.lineWidth = 1.1;
      ctx.globalAlpha = 0.5;
      for (let i = 0; i < n; i++) {
        ctx.strokeStyle = GROUP[toy.groups[i]];
        strokePath(r.paths, T, i);
      }
      ctx.globalAlpha = 1;
    }

    const euler = steps && r.paths ? r.euler[String(steps)] : undefined;
    if (euler) {
      const m = euler.path.shape[0];
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 0.8;
      ctx.globalAlpha = 0.35;
      for (let i = 0; i < n; i++) strokePath(euler.path, m, i);
      ctx.globalAlpha = 1;
      const landing = ((m - 1) * n) * 2;
      const end = ((toy.t.length - 1) * n) * 2;
      ctx.strokeStyle = ERROR;
      ctx.lineWidth = 1.2;
      ctx.globalAlpha = 0.75;
      for (let i = 0; i < n; i++) {
        ctx.beginPath();
        ctx.moveTo(sx(euler.path[landing + 2 * i]), sy(euler.path[landing + 2 * i + 1]));
        ctx.lineTo(sx(r.paths[end + 2 * i]), sy(r.paths[end + 2 * i + 1]));
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1;
      for (let i = 0; i < n; i++) {
        ctx.beginPath();
        ctx.arc(sx(euler.path[landing + 2 * i]), sy(euler.path[landing + 2 * i + 1]), 2.6, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }

    ctx.lineWidth = 0.8;
    ctx.strokeStyle = "#fff";
    for (let i = 0; i < n; i++) {
      const [px, py] = position(toy, r, t, i, n);
      ctx.fillStyle = GROUP[toy.groups[i]];
      ctx.beginPath();
      ctx.arc(sx(px), sy(py), 3.2, 0, 2 * Math.PI);
      ctx.fill();
      ctx.stroke();
    }
    ctx.restore();

    drawPanel(toy, k, steps, t);
    readout.textContent = readoutText(toy, k, t, steps);
  }

  // the panel right of the plot: title (round and t), legend, bars; nothing drawn over the data
  function drawPanel(toy, k, steps, t) {
    const x = PLOT + 16;
    let y = 18;
    ctx.fillStyle = "#222";
    ctx.font = "bold 14px system-ui, sans-serif";
    ctx.fillText(k === 0 ? "round 0: independent coupling" : `round ${k}: ${toy.rounds[k].label}`, x, y);
    y += 18;
    ctx.font = "13px system-ui, sans-serif";
    ctx.fillText(`t = ${t.toFixed(2)}`, x, y);
    y += 24;
    ctx.font = "12px system-ui, sans-serif";
    const entry = (glyph, text) => {
      ctx.save();
      glyph(x, y - 4);
      ctx.restore();
      ctx.fillStyle = "#222";
      ctx.fillText(text, x + 30, y);
      y += 18;
    };
    const dot = (colour, alpha, radius) => (gx, gy) => {
      ctx.globalAlpha = alpha;
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(gx + 12, gy, radius, 0, 2 * Math.PI);
      ctx.fill();
    };
    const line = (colour, width, dash, alpha) => (gx, gy) => {
      ctx.globalAlpha = alpha;
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.setLineDash(dash);
      ctx.beginPath();
      ctx.moveTo(gx, gy);
      ctx.lineTo(gx + 24, gy);
      ctx.stroke();
    };
    entry(dot(GROUP[0], 1, 4), `particle, ${toy.groupNames[0]}`);
    entry(dot(GROUP[1], 1, 4), `particle, ${toy.groupNames[1]}`);
    entry(dot(NOISE, 0.5, 2.5), "noise x₀ (cloud)");
    entry(dot(DATA, 0.5, 2.5), "data (cloud)");
    entry(line(GROUP[0], 1, [3, 3], 0.6), "chord: x₀ to its training partner");
    entry(line(GROUP[0], 1.2, [], 0.7), "flow path Z_t");
    entry(line("#000", 1, [], 0.5), "Euler path, ○ its landing");
    entry(line(ERROR, 1.5, [], 1), "landing to exact end Z₁");

    // straightness per round, and the Euler error of the chosen steps
    y += 10;
    ctx.fillStyle = "#222";
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.fillText("straightness S per round", x, y);
    y += 6;
    ctx.font = "12px system-ui, sans-serif";
    const flows = toy.rounds.slice(1);
    const sMax = Math.max(1e-12, ...flows.map((r) => r.straightness));
    const barRow = (label, value, vmax, active, colour) => {
      y += 16;
      ctx.fillStyle = active ? "#222" : "#777";
      ctx.fillText(label, x, y);
      ctx.fillStyle = colour;
      ctx.globalAlpha = active ? 1 : 0.45;
      ctx.fillRect(x + 48, y - 9, Math.max(1, (value / vmax) * 130), 10);
      ctx.globalAlpha = 1;
      ctx.fillStyle = active ? "#222" : "#777";
      ctx.fillText(value.toFixed(4), x + 184, y);
    };
    for (const r of flows) barRow(`${r.k}-RF`, r.straightness, sMax, r.k === k, "#555");
    if (steps) {
      y += 22;
      ctx.font = "bold 12px system-ui, sans-serif";
      ctx.fillStyle = "#222";
      ctx.fillText(`mean Euler error, ${steps} step${steps > 1 ? "s" : ""}`, x, y);
      y += 6;
      ctx.font = "12px system-ui, sans-serif";
      const eMax = Math.max(1e-12, ...flows.map((r) => r.euler[String(steps)].error));
      for (const r of flows) barRow(`${r.k}-RF`, r.euler[String(steps)].error, eMax, r.k === k, ERROR);
    }
    if (k === 0) {
      y += 22;
      ctx.fillStyle = "#222";
      ctx.fillText("round 0: no flow yet, no Euler path", x, y);
    }
  }

  function setState(name, value) {
    model.set(name, value);
    model.save_changes();
  }

  function stop() {
    if (frame !== null) cancelAnimationFrame(frame);
    frame = null;
    last = null;
    playing = false;
    play.textContent = "▶ play";
    setState("t", Math.round(localT * 100) / 100);
  }

  function tick(now) {
    if (last !== null) localT = Math.min(1, localT + (now - last) / 1000 / PLAY_SECONDS);
    last = now;
    tIn.value = localT;
    tOut.value = localT.toFixed(2);
    draw();
    if (localT >= 1) stop();
    else frame = requestAnimationFrame(tick);
  }

  toySel.addEventListener("change", () => {
    const toy = toys.find((x) => x.name === toySel.value);
    if (model.get("round") > toy.rounds.length - 1) model.set("round", toy.rounds.length - 1);
    setState("toy", toySel.value);
  });
  roundIn.addEventListener("input", () => setState("round", Number(roundIn.value)));
  tIn.addEventListener("input", () => {
    if (playing) stop();
    localT = Number(tIn.value);
    setState("t", localT);
  });
  stepsSel.addEventListener("change", () => setState("steps", Number(stepsSel.value)));
  chordsIn.addEventListener("change", () => setState("show_chords", chordsIn.checked));
  pathsIn.addEventListener("change", () => setState("show_paths", pathsIn.checked));
  play.addEventListener("click", () => {
    if (playing) return stop();
    if (localT >= 1) localT = 0;
    playing = true;
    play.textContent = "❚❚ pause";
    frame = requestAnimationFrame(tick);
  });

  const update = () => {
    if (!playing) localT = model.get("t");
    syncInputs();
    draw();
  };
  const names = ["round", "t", "steps", "toy", "show_chords", "show_paths"];
  for (const name of names) model.on(`change:${name}`, update);
  const onPayload = () => {
    toys = model.get("payload").toys.map(decodeToy);
    update();
  };
  model.on("change:payload", onPayload);

  sizeCanvas();
  update();
  return () => {
    if (frame !== null) cancelAnimationFrame(frame);
    for (const name of names) model.off(`change:${name}`, update);
    model.off("change:payload", onPayload);
  };
}

export default { render };
