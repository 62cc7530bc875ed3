// The rhythm report's tables and heart-rate trend, from the strip answer's `report` (every value may
// be null where undefined; older services send no report at all, and then only the counts show).

import { clock } from "./strip.js";

const CLASSES = ["N", "S", "V", "F", "Q"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? "–"));
  return node;
}

function fixed(value, digits = 1) { return value === null || value === undefined ? "–" : Number(value).toFixed(digits); }

/** A time that scrolls the strip there when clicked. */
function at(seconds, jump) {
  if (seconds === null || seconds === undefined) return "–";
  const link = el("a", { "data-time": seconds, title: "show on the strip" }, clock(seconds));
  link.addEventListener("click", () => jump(seconds));
  return link;
}

function table(caption, head, rows, id) {
  const t = el("table", id ? { id } : {}, el("caption", {}, caption));
  t.append(el("tr", {}, ...head.map(h => el("th", {}, h))));
  for (const row of rows) t.append(el("tr", {}, ...row.map(c => el("td", {}, c))));
  if (!rows.length) t.append(el("tr", { class: "none" }, el("td", { colspan: head.length }, "none")));
  return t;
}

export function renderReport(container, answer, jump) {
  container.replaceChildren();
  const report = answer.report;
  const counts = report?.beats ?? { total: answer.summary?.n_beats, ...answer.summary?.counts };
  container.append(table("Beats by class", ["class", "beats"],
    [...CLASSES.map(c => [c, counts[c] ?? 0]), ["total", counts.total ?? 0]], "report-beats"));
  if (!report) {
    container.append(el("p", { id: "no-report" }, "This answer carries no rhythm report; the service that sent it predates it."));
    return;
  }
  const hr = report.heart_rate ?? {};
  container.append(table(`Heart rate (${hr.window_s ?? 60} s windows)`, ["", "bpm", "at"], [
    ["min", fixed(hr.min_bpm), at(hr.min_at_s, jump)],
    ["mean", fixed(hr.mean_bpm), "–"],
    ["max", fixed(hr.max_bpm), at(hr.max_at_s, jump)],
  ], "report-hr"));
  const analysed = table("Recording", ["", ""], [
    ["duration", `${fixed(report.duration_s)} s`], ["analysed", `${fixed(report.analysed_s)} s`],
    ["beats for review", report.review ? `${report.review.beats ?? 0} (${fixed(100 * (report.review.share ?? 0))} %)` : "–"],
  ], "report-recording");
  container.append(analysed);
  for (const cls of ["V", "S"]) {
    const e = report.ectopy?.[cls];
    if (!e) continue;
    container.append(table(`${cls} ectopy`, ["", ""], [
      ["isolated", e.isolated ?? "–"], ["isolated per hour", fixed(e.isolated_per_hour)],
      ["couplets", e.couplets ?? "–"], ["triplets", e.triplets ?? "–"],
      ["runs (≥ 3)", (e.runs ?? []).length], ["bigeminy episodes", (e.bigeminy ?? []).length],
      ["trigeminy episodes", (e.trigeminy ?? []).length],
    ], `report-ectopy-${cls}`));
    const episodes = [
      ...(e.runs ?? []).map(r => [`run, ${fixed(r.rate_bpm, 0)} bpm`, r]),
      ...(e.bigeminy ?? []).map(r => ["bigeminy", r]), ...(e.trigeminy ?? []).map(r => ["trigeminy", r]),
    ].sort((a, b) => a[1].start_s - b[1].start_s)
      .map(([kind, r]) => [kind, at(r.start_s, jump), fixed(r.end_s - r.start_s), r.beats]);
    if (episodes.length) container.append(el("div", { class: "episodes" },
      table(`${cls} runs and episodes (${episodes.length})`, ["", "start", "s", "beats"], episodes, `report-runs-${cls}`)));
  }
  container.append(table(`Pauses (RR > ${fixed(report.pause_threshold_s)} s)`, ["start", "s"],
    (report.pauses ?? []).map(p => [at(p.start_s, jump), fixed(p.duration_s, 2)]), "report-pauses"));
  container.append(table("Unreadable spans", ["start", "s", "reason"],
    (report.unreadable ?? []).map(u => [at(u.start_s, jump), fixed(u.end_s - u.start_s), u.reason ?? ""]), "report-unreadable"));
}

/** The per-window heart rate as a line over the record, with the strip's view marked. */
export class Trend {
  constructor(canvas, jump) {
    this.canvas = canvas; this.trend = []; this.duration = 0; this.view = null;
    canvas.addEventListener("click", e => {
      if (!this.duration) return;
      const rect = canvas.getBoundingClientRect();
      const x = (e.clientX - rect.left) * canvas.width / rect.width;
      jump(Math.max(0, (x - 40) / (canvas.width - 64) * this.duration));
    });
  }

  set(trend, duration) { this.trend = trend ?? []; this.duration = duration; this.draw(); }

  mark(start, end) { this.view = [start, end]; this.draw(); }

  draw() {
    const c = this.canvas, ctx = c.getContext("2d"), w = c.width, h = c.height;
    ctx.clearRect(0, 0, w, h);
    const left = 40, right = w - 24, top = 10, bottom = h - 22;
    const points = this.trend.filter(p => p.bpm !== null && p.bpm !== undefined);
    const rates = points.map(p => p.bpm);
    const lo = Math.max(0, Math.floor((Math.min(...rates, 60) - 10) / 10) * 10), hi = Math.ceil((Math.max(...rates, 100) + 10) / 10) * 10;
    const x = t => left + (right - left) * (this.duration ? t / this.duration : 0), y = bpm => bottom - (bottom - top) * (bpm - lo) / (hi - lo);
    ctx.font = "11px system-ui, sans-serif"; ctx.fillStyle = "#555"; ctx.strokeStyle = "#ddd"; ctx.lineWidth = 1;
    for (let b = lo; b <= hi; b += 20) { ctx.beginPath(); ctx.moveTo(left, y(b)); ctx.lineTo(right, y(b)); ctx.stroke(); ctx.fillText(`${b}`, 8, y(b) + 4); }
    const step = this.duration > 900 ? 300 : 60;
    for (let t = 0; t <= this.duration; t += step) ctx.fillText(clock(t), x(t) - 10, h - 6);
    if (this.view) { ctx.fillStyle = "rgba(27,94,171,0.15)"; ctx.fillRect(x(this.view[0]), top, Math.max(2, x(this.view[1]) - x(this.view[0])), bottom - top); }
    ctx.strokeStyle = "#c62828"; ctx.fillStyle = "#c62828"; ctx.lineWidth = 2; ctx.beginPath();
    points.forEach((p, i) => {
      const px = x((p.start_s + p.end_s) / 2), py = y(p.bpm);
      if (i) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    });
    ctx.stroke();
    for (const p of points) { ctx.beginPath(); ctx.arc(x((p.start_s + p.end_s) / 2), y(p.bpm), 3, 0, 2 * Math.PI); ctx.fill(); }
    this.points = points.length;
  }
}
