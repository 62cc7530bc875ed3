// The ECG strip on a standard grid: 25 mm/s and 10 mm/mV, small squares 1 mm, large squares 5 mm.
// A record of 30 minutes is 45 m of paper, wider than any canvas: the canvas covers the visible
// window only (it stays in place while a spacer gives the scroll width) and redraws on scroll.

export const COLOURS = { N: "#333333", S: "#1b5eab", V: "#c62828", F: "#e07b00", Q: "#7b3fa0", review: "#d81b9a" };
export const PX_PER_MM = 4;
const MM_PER_S = 25, MM_PER_MV = 10;
const PX_PER_S = MM_PER_S * PX_PER_MM, PX_PER_MV = MM_PER_MV * PX_PER_MM;
const LABEL_LANE = 22, AXIS = 16, TRACE_MM = 50;  // 5 mV of paper between label lane and time axis

export function colourOf(beat) { return beat.review ? COLOURS.review : (COLOURS[beat.label] || "#000"); }

export class StripView {
  constructor(scroller, canvas, spacer, onSelect, onView) {
    Object.assign(this, { scroller, canvas, spacer, onSelect, onView });
    this.mv = new Float32Array(0); this.fs = 360; this.beats = []; this.unreadable = [];
    this.selected = -1; this.drawnBeats = 0; this.pending = false;
    scroller.addEventListener("scroll", () => this.schedule());
    window.addEventListener("resize", () => this.resize());
    canvas.addEventListener("click", e => this.click(e));
    this.resize();
  }

  get height() { return LABEL_LANE + TRACE_MM * PX_PER_MM + AXIS; }
  get duration() { return this.mv.length / this.fs; }

  setSignal(mv, fs) {
    this.mv = mv; this.fs = fs; this.beats = []; this.unreadable = []; this.selected = -1;
    this.zero = median(mv);
    this.spacer.style.width = `${Math.ceil(this.duration * PX_PER_S)}px`;
    this.scroller.scrollLeft = 0;
    this.resize();
  }

  setBeats(beats, unreadable) { this.beats = beats; this.unreadable = unreadable || []; this.selected = -1; this.draw(); }

  resize() {
    const width = this.scroller.clientWidth, ratio = window.devicePixelRatio || 1;
    this.width = width;
    this.canvas.style.width = `${width}px`; this.canvas.style.height = `${this.height}px`;
    this.canvas.width = Math.round(width * ratio); this.canvas.height = Math.round(this.height * ratio);
    this.ratio = ratio;
    this.draw();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  /** Seconds shown: [start, end). */
  view() {
    const start = this.scroller.scrollLeft / PX_PER_S;
    return { start, end: start + this.width / PX_PER_S };
  }

  draw() {
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(this.ratio, 0, 0, this.ratio, 0, 0);
    ctx.clearRect(0, 0, this.width, this.height);
    const { start, end } = this.view();
    const x0 = start * PX_PER_S;
    this.drawUnreadable(ctx, start, end, x0);
    this.drawGrid(ctx, x0);
    this.drawTrace(ctx, start, end, x0);
    this.drawBeats(ctx, start, end, x0);
    if (this.onView && this.mv.length) this.onView(start, end);
  }

  drawGrid(ctx, x0) {
    const top = LABEL_LANE, bottom = LABEL_LANE + TRACE_MM * PX_PER_MM;
    const firstMm = Math.floor(x0 / PX_PER_MM);
    for (const large of [false, true]) {
      ctx.beginPath();
      ctx.strokeStyle = large ? "#e58a8a" : "#f6d2d2";
      ctx.lineWidth = large ? 1 : 0.6;
      for (let mm = firstMm; mm * PX_PER_MM <= x0 + this.width; mm++) {
        if ((mm % 5 === 0) !== large) continue;
        const x = Math.round(mm * PX_PER_MM - x0) + 0.5;
        ctx.moveTo(x, top); ctx.lineTo(x, bottom);
      }
      for (let mm = 0; mm <= TRACE_MM; mm++) {
        if ((mm % 5 === 0) !== large) continue;
        const y = Math.round(top + mm * PX_PER_MM) + 0.5;
        ctx.moveTo(0, y); ctx.lineTo(this.width, y);
      }
      ctx.stroke();
    }
    ctx.fillStyle = "#555"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "left";
    for (let s = Math.ceil(x0 / PX_PER_S); s * PX_PER_S < x0 + this.width; s++) {
      const x = s * PX_PER_S - x0;
      ctx.fillText(clock(s), x + 2, bottom + 12);
    }
  }

  yOf(mv) { return LABEL_LANE + 30 * PX_PER_MM - (mv - this.zero) * PX_PER_MV; }  // 0 mV 30 mm down

  drawTrace(ctx, start, end, x0) {
    const first = Math.max(0, Math.floor(start * this.fs) - 1), last = Math.min(this.mv.length, Math.ceil(end * this.fs) + 1);
    const pxPerSample = PX_PER_S / this.fs;
    ctx.save();
    ctx.beginPath(); ctx.rect(0, LABEL_LANE, this.width, TRACE_MM * PX_PER_MM); ctx.clip();
    ctx.beginPath(); ctx.strokeStyle = "#111"; ctx.lineWidth = 1.1; ctx.lineJoin = "round";
    let pen = false;
    for (let i = first; i < last; i++) {
      const v = this.mv[i];
      if (Number.isNaN(v)) { pen = false; continue; }
      const x = i * pxPerSample - x0, y = this.yOf(v);
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    }
    ctx.stroke();
    ctx.restore();
  }

  drawUnreadable(ctx, start, end, x0) {
    ctx.fillStyle = "rgba(120,120,120,0.18)";
    for (const span of this.unreadable) {
      const spanEnd = span.end_s ?? span.start_s;
      if (spanEnd < start || span.start_s > end) continue;
      const x = span.start_s * PX_PER_S - x0;
      ctx.fillRect(x, LABEL_LANE, (spanEnd - span.start_s) * PX_PER_S, TRACE_MM * PX_PER_MM);
      ctx.fillStyle = "#555"; ctx.fillText(`unreadable${span.reason ? ": " + span.reason : ""}`, Math.max(x, 0) + 4, LABEL_LANE + 14);
      ctx.fillStyle = "rgba(120,120,120,0.18)";
    }
  }

  drawBeats(ctx, start, end, x0) {
    const from = firstAtOrAfter(this.beats, start - 0.2);
    ctx.font = "bold 13px system-ui, sans-serif"; ctx.textAlign = "center";
    let drawn = 0;
    for (let i = from; i < this.beats.length && this.beats[i].time_s <= end + 0.2; i++) {
      const beat = this.beats[i], x = beat.time_s * PX_PER_S - x0, colour = colourOf(beat);
      ctx.fillStyle = colour; ctx.strokeStyle = colour;
      if (i === this.selected) {
        ctx.fillStyle = "rgba(27,94,171,0.12)";
        ctx.fillRect(x - 14, 0, 28, LABEL_LANE + TRACE_MM * PX_PER_MM);
        ctx.fillStyle = colour;
      }
      ctx.fillText(beat.label, x, 15);
      if (beat.review) { ctx.lineWidth = 1.5; ctx.strokeRect(x - 9, 2, 18, 17); }
      ctx.beginPath(); ctx.lineWidth = 1; ctx.moveTo(x, LABEL_LANE); ctx.lineTo(x, LABEL_LANE + 6); ctx.stroke();
      drawn++;
    }
    this.drawnBeats = drawn;
  }

  click(event) {
    if (!this.beats.length) return;
    const rect = this.canvas.getBoundingClientRect();
    const t = (this.scroller.scrollLeft + event.clientX - rect.left) / PX_PER_S;
    const i = nearest(this.beats, t);
    if (i >= 0 && Math.abs(this.beats[i].time_s - t) < 0.2) this.select(i, false);
  }

  /** Select beat i; with `scroll`, bring it to a third of the way across the view. */
  select(i, scroll) {
    this.selected = i;
    if (scroll) this.scrollTo(this.beats[i].time_s);
    this.draw();
    if (this.onSelect) this.onSelect(this.beats[i], i);
  }

  scrollTo(seconds) {
    this.scroller.scrollLeft = Math.max(0, seconds * PX_PER_S - this.width / 3);
    this.draw();
  }

  /** The next beat after the selected one (or after the view's left third) that `matches`. */
  next(matches) {
    const { start, end } = this.view(), chosen = this.beats[this.selected];
    const inView = chosen && chosen.time_s >= start && chosen.time_s <= end;
    const after = inView ? this.selected + 1 : firstAtOrAfter(this.beats, start + 0.01);
    for (let i = after; i < this.beats.length; i++) if (matches(this.beats[i])) return i;
    return -1;
  }
}

function firstAtOrAfter(beats, t) {
  let lo = 0, hi = beats.length;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (beats[mid].time_s < t) lo = mid + 1; else hi = mid; }
  return lo;
}

function nearest(beats, t) {
  const i = firstAtOrAfter(beats, t);
  if (i === 0) return beats.length ? 0 : -1;
  if (i === beats.length) return i - 1;
  return t - beats[i - 1].time_s < beats[i].time_s - t ? i - 1 : i;
}

function median(values) {
  const step = Math.max(1, Math.floor(values.length / 20000)), sample = [];
  for (let i = 0; i < values.length; i += step) if (!Number.isNaN(values[i])) sample.push(values[i]);
  sample.sort((a, b) => a - b);
  return sample.length ? sample[sample.length >> 1] : 0;
}

export function clock(seconds) {
  const s = Math.floor(seconds), m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}
