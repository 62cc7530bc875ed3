// WFDB records read in the browser, so the page can draw the signal it sends: the header's record
// and signal lines, and the signal file in formats 212 and 16 (the formats MIT-BIH and most
// PhysioNet databases use). Other formats are refused with a message naming the format.

export class RecordError extends Error {}

const SUPPORTED = ["212", "16"];

/** The header's record line and signal lines (comments and blank lines skipped). */
export function parseHeader(text) {
  const lines = text.split(/\r?\n/).map(l => l.trim()).filter(l => l && !l.startsWith("#"));
  if (!lines.length) throw new RecordError("the header file is empty");
  const record = lines[0].split(/\s+/);
  if (record[0].includes("/")) throw new RecordError("multi-segment records are not supported; upload one segment");
  const nsig = parseInt(record[1], 10);
  if (!Number.isInteger(nsig) || nsig < 1) {
    throw new RecordError(`the first line of a header names the record and its number of signals; got "${lines[0].slice(0, 60)}" (is this the .hea file?)`);
  }
  const fs = record[2] ? parseFloat(record[2].split(/[/(]/)[0]) : 250;
  const nsamp = record[3] ? parseInt(record[3], 10) : null;
  if (lines.length < 1 + nsig) throw new RecordError(`the header announces ${nsig} signals but describes ${lines.length - 1}`);
  const signals = lines.slice(1, 1 + nsig).map((line, index) => parseSignalLine(line, index));
  return { name: record[0], nsig, fs, nsamp, signals };
}

function parseSignalLine(line, index) {
  const f = line.split(/\s+/);
  const format = f[1] || "";
  const m = /^(\d+)(x\d+)?(:-?\d+)?(\+\d+)?$/.exec(format);
  if (!m) throw new RecordError(`signal ${index}: unreadable format field "${format}"`);
  const adczero = f[4] !== undefined ? parseInt(f[4], 10) : 0;
  let gain = 200, baseline = adczero, units = "mV";
  if (f[2] !== undefined) {
    const g = /^([-+\d.eE]+)(?:\((-?\d+)\))?(?:\/(\S+))?$/.exec(f[2]);
    if (!g) throw new RecordError(`signal ${index}: unreadable gain field "${f[2]}"`);
    gain = parseFloat(g[1]) || 200;
    if (g[2] !== undefined) baseline = parseInt(g[2], 10);
    if (g[3]) units = g[3];
  }
  return {
    file: f[0], format: m[1], framesPerSample: m[2] ? parseInt(m[2].slice(1), 10) : 1,
    byteOffset: m[4] ? parseInt(m[4].slice(1), 10) : 0, gain, baseline, units,
    description: f.slice(8).join(" ") || `signal ${index}`,
  };
}

/** The lead the service analyses by default: MLII where present, else the first. */
export function defaultLead(header) {
  const i = header.signals.findIndex(s => s.description === "MLII");
  return i >= 0 ? i : 0;
}

/** One lead of the signal file as mV (NaN where WFDB marks a sample invalid). */
export function decodeLead(header, buffer, lead) {
  const sig = header.signals[lead];
  const group = header.signals.filter(s => s.file === sig.file);
  const within = group.indexOf(sig);
  if (!SUPPORTED.includes(sig.format)) {
    throw new RecordError(`signal format ${sig.format} is not drawn by the viewer (it reads formats ${SUPPORTED.join(" and ")}); the service can still analyse the record`);
  }
  if (group.some(s => s.format !== sig.format || s.framesPerSample !== 1 || s.byteOffset !== sig.byteOffset)) {
    throw new RecordError("signals of one file with mixed formats, offsets or several samples per frame are not supported");
  }
  const bytes = new Uint8Array(buffer, sig.byteOffset);
  const raw = sig.format === "212" ? unpack212(bytes) : unpack16(bytes);
  const frames = Math.floor(raw.length / group.length);
  const n = header.nsamp ? Math.min(header.nsamp, frames) : frames;
  if (n < 1) throw new RecordError(`the signal file holds no samples for ${group.length} signal(s) in format ${sig.format}`);
  const invalid = sig.format === "212" ? -2048 : -32768;
  const scale = (sig.units.toLowerCase() === "uv" ? 1000 : 1) * sig.gain;
  const mv = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = raw[i * group.length + within];
    mv[i] = v === invalid ? NaN : (v - sig.baseline) / scale;
  }
  return mv;
}

function unpack212(bytes) {
  const pairs = Math.floor(bytes.length / 3);
  const out = new Int16Array(pairs * 2 + (bytes.length % 3 >= 2 ? 1 : 0));
  let j = 0;
  for (let i = 0; i + 2 < bytes.length; i += 3) {
    const b0 = bytes[i], b1 = bytes[i + 1], b2 = bytes[i + 2];
    let a = b0 | ((b1 & 0x0f) << 8), b = b2 | ((b1 & 0xf0) << 4);
    out[j++] = a > 2047 ? a - 4096 : a;
    out[j++] = b > 2047 ? b - 4096 : b;
  }
  if (j < out.length) {
    const a = bytes[pairs * 3] | ((bytes[pairs * 3 + 1] & 0x0f) << 8);
    out[j] = a > 2047 ? a - 4096 : a;
  }
  return out;
}

function unpack16(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength - (bytes.byteLength % 2));
  const out = new Int16Array(view.byteLength / 2);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true);
  return out;
}
