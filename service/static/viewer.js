// The viewer's page: reads the record in the browser (to draw it), sends it to the service's own
// strip endpoints (/predict/wfdb for WFDB records, /predict/strip for CSV strips) and shows the
// answer: labelled beats on the strip, a beat's probabilities, the rhythm report and the trend.
// `window.viewerState` exposes what is shown, for tests and benchmarks.

import { parseHeader, decodeLead, defaultLead, RecordError } from "./wfdb.js";
import { parseCsv } from "./csv.js";
import { StripView, COLOURS, colourOf, clock } from "./strip.js";
import { renderReport, Trend } from "./report.js";

const $ = id => document.getElementById(id);
const API = "../";  // the page lives at <service>/viewer/
const state = window.viewerState = { status: "idle", beats: [], selected: null, timings: {}, answer: null };

const trend = new Trend($("trend"), seconds => strip.scrollTo(seconds));
const strip = new StripView($("scroller"), $("strip"), $("spacer"), showBeat, (start, end) => {
  state.view = { start, end, scrollLeft: $("scroller").scrollLeft };
  $("position").textContent = `${clock(start)} – ${clock(end)} of ${clock(strip.duration)}`;
  trend.mark(start, end);
});

state.strip = strip; state.trend = trend;
$("legend").append(...Object.entries(COLOURS).map(([name, colour]) => {
  const chip = document.createElement("span");
  chip.style.background = colour; chip.textContent = name;
  return chip;
}));

// The API key the user typed (only needed where the service has ECG_API_KEYS), for this tab only.
$("api-key").value = sessionStorage.getItem("ecg-api-key") ?? "";
$("api-key").addEventListener("change", () => { sessionStorage.setItem("ecg-api-key", $("api-key").value); loadModels(); });

function withKey(headers = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...headers, "X-API-Key": key } : headers;
}

function say(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

async function loadModels() {
  try {
    const answer = await fetch(`${API}models`, { headers: withKey() });
    if (!answer.ok) return;
    const { models } = await answer.json();
    $("model").replaceChildren($("model").options[0]);
    for (const [name, card] of Object.entries(models)) {
      if (card.input_kind !== "context") continue;  // strips are cut into context beats
      const option = document.createElement("option");
      option.value = name; option.textContent = `${name} ${card.version ?? ""}`;
      $("model").append(option);
    }
  } catch { /* the select keeps "service default" */ }
}

/** The record's files, sorted out: a WFDB header with its signal file, or a CSV strip. */
async function readFiles(files) {
  const list = [...files];
  if (!list.length) throw new RecordError("choose a record's .hea and .dat files, or a CSV strip");
  const csv = list.find(f => /\.(csv|txt)$/i.test(f.name));
  if (csv) return { kind: "csv", file: csv, name: csv.name };
  const headerFile = list.find(f => /\.hea$/i.test(f.name));
  if (!headerFile) throw new RecordError("a WFDB record needs its header (.hea) file too: choose the .hea and the .dat together");
  const header = parseHeader(await headerFile.text());
  const lead = defaultLead(header);
  const wanted = header.signals[lead].file;
  const others = list.filter(f => f !== headerFile);
  const signalFile = others.find(f => f.name === wanted) ?? (others.length === 1 ? others[0] : null);
  if (!signalFile) throw new RecordError(`the header names its signal file "${wanted}": choose it together with the header`);
  return { kind: "wfdb", header, headerFile, signalFile, lead, name: header.name };
}

async function analyse(files) {
  const t0 = performance.now();
  state.status = "reading"; state.timings = {}; state.beats = []; state.answer = null; state.selected = null;
  $("beat").hidden = true; $("report-section").hidden = true;
  let record;
  try {
    record = await readFiles(files);
    let request;
    if (record.kind === "wfdb") {
      const mv = decodeLead(record.header, await record.signalFile.arrayBuffer(), record.lead);
      show(record, mv, record.header.fs);
      const form = new FormData();
      form.append("header", record.headerFile, record.headerFile.name);
      form.append("signal", record.signalFile, record.signalFile.name);
      const query = new URLSearchParams({ lead: String(record.lead) });
      if ($("model").value) query.set("model", $("model").value);
      request = fetch(`${API}predict/wfdb?${query}`, { method: "POST", body: form, headers: withKey({ "X-Request-Timeout": "300" }) });
    } else {
      const { mv, rate } = parseCsv(await record.file.text(), parseFloat($("rate").value));
      show(record, mv, rate);
      const body = { sampling_rate: rate, signal: Array.from(mv) };
      if ($("model").value) body.model = $("model").value;
      request = fetch(`${API}predict/strip`, { method: "POST", body: JSON.stringify(body),
        headers: withKey({ "content-type": "application/json", "X-Request-Timeout": "300" }) });
    }
    await paint();
    state.timings.signal_paint_ms = performance.now() - t0;
    say(`${record.name}: analysing ${clock(strip.duration)} of ECG…`);
    state.status = "analysing";
    const response = await request;
    const answer = await response.json().catch(() => ({ detail: `the service answered ${response.status}` }));
    state.timings.answer_ms = performance.now() - t0;
    if (!response.ok) throw new RecordError(describeError(response.status, answer));
    showAnswer(record, answer);
    await paint();
    state.timings.beats_paint_ms = performance.now() - t0;
    state.status = "ready";
  } catch (err) {
    state.status = "error";
    say(err instanceof RecordError ? err.message : `could not analyse the record: ${err.message}`, true);
    if (!(err instanceof RecordError)) console.error(err);
  }
}

/** Resolves after the browser has painted the current frame. */
function paint() { return new Promise(resolve => requestAnimationFrame(() => setTimeout(resolve, 0))); }

function describeError(status, answer) {
  const detail = answer?.detail;
  if (Array.isArray(detail)) return `the service refused the record (${status}): ` +
    detail.map(d => `${(d.loc ?? []).join(".")}: ${d.msg}`).join("; ");
  if (status === 401) return `the service needs an API key (${detail ?? "401"}): type it in the API key field`;
  return `the service answered ${status}: ${detail ?? "no detail"}`;
}

function show(record, mv, fs) {
  $("strip-section").hidden = false;
  $("record-name").textContent = record.kind === "wfdb"
    ? `${record.name} · ${record.header.signals[record.lead].description} · ${fs} Hz` : `${record.name} · ${fs} Hz`;
  strip.setSignal(mv, fs);
}

function showAnswer(record, answer) {
  state.answer = answer;
  state.beats = answer.beats;
  const report = answer.report;
  strip.setBeats(answer.beats, report?.unreadable);
  renderReport($("report"), answer, seconds => strip.scrollTo(seconds));
  trend.set(report?.heart_rate?.trend, strip.duration);
  $("report-section").hidden = false;
  const counts = Object.entries(answer.summary.counts).filter(([, n]) => n).map(([c, n]) => `${n} ${c}`).join(", ");
  say(`${record.name}: ${answer.beats.length} beats (${counts || "none"}) by ${answer.model} ${answer.version}` +
      (answer.reason ? ` – ${answer.reason}` : ""));
}

function showBeat(beat, index) {
  state.selected = { index, ...beat };
  const box = $("beat");
  box.replaceChildren();
  const title = document.createElement("div");
  title.innerHTML = `<b style="color:${colourOf(beat)}">${beat.label}</b> beat ${index + 1} at ${beat.time_s.toFixed(3)} s (sample ${beat.sample})` +
    (beat.review ? " · <b>flagged for review</b>" : "") +
    (beat.confidence !== undefined && beat.confidence !== null ? ` · confidence ${beat.confidence.toFixed(3)}` : "") +
    (beat.af_criteria ? "<br>RR intervals meet the criteria of atrial fibrillation: S not called, its probability given to N" : "");
  const rows = document.createElement("table");
  for (const [cls, p] of Object.entries(beat.probabilities)) {
    const row = rows.insertRow();
    row.insertCell().textContent = cls;
    row.insertCell().textContent = p.toFixed(3);
    const bar = document.createElement("span");
    bar.className = "bar"; bar.style.width = `${Math.round(p * 200)}px`;
    row.insertCell().append(bar);
  }
  box.append(title, rows);
  box.hidden = false;
}

for (const button of document.querySelectorAll("[data-jump]")) {
  button.addEventListener("click", () => {
    const kind = button.dataset.jump;
    const i = strip.next(kind === "review" ? b => b.review : b => b.label === kind);
    if (i < 0) { say(`no ${kind === "review" ? "beat for review" : kind + " beat"} after this point`); return; }
    strip.select(i, true);
  });
}

$("upload").addEventListener("submit", event => { event.preventDefault(); analyse($("files").files); });
$("files").addEventListener("change", () => {
  if (![...$("files").files].some(f => /\.(csv|txt)$/i.test(f.name))) analyse($("files").files);
});

$("example").addEventListener("click", async () => {
  try {
    const [hea, dat] = await Promise.all(["examples/208.hea", "examples/208.dat"].map(async path => {
      const response = await fetch(path);
      if (!response.ok) throw new RecordError(`the bundled example ${path} is missing (${response.status})`);
      return new File([await response.blob()], path.split("/").pop());
    }));
    await analyse([hea, dat]);
  } catch (err) { say(err.message, true); }
});

loadModels();
state.status = "idle";
