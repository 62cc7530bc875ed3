// CSV strips: one column of mV, or two columns time (s) and mV; a header line is skipped. The rate
// comes from the time column where there is one, else from the user.

import { RecordError } from "./wfdb.js";

export function parseCsv(text, givenRate) {
  const rows = [];
  for (const line of text.split(/\r?\n/)) {
    const cells = line.trim().split(/[,;\t ]+/).filter(Boolean);
    if (!cells.length) continue;
    const values = cells.map(Number);
    if (values.some(v => !Number.isFinite(v))) {
      if (rows.length) throw new RecordError(`line ${rows.length + 1} of the CSV is not numbers: "${line.slice(0, 40)}"`);
      continue;  // a header line
    }
    rows.push(values);
  }
  if (!rows.length) throw new RecordError("the CSV holds no rows of numbers");
  const columns = rows[0].length;
  const mv = new Float32Array(rows.map(r => r[columns > 1 ? 1 : 0]));
  let rate = givenRate;
  if (columns > 1) {
    const steps = [];
    for (let i = 1; i < Math.min(rows.length, 2001); i++) steps.push(rows[i][0] - rows[i - 1][0]);
    steps.sort((a, b) => a - b);
    const step = steps[Math.floor(steps.length / 2)];
    if (!(step > 0)) throw new RecordError("the CSV's time column does not increase");
    const span = rows[rows.length - 1][0] - rows[0][0];  // over the whole column: rounded times average out
    rate = Math.round(1000 * (rows.length - 1) / span) / 1000;
  } else if (!(rate > 0)) {
    throw new RecordError("a CSV with one column needs its sampling rate: fill in Rate (Hz)");
  }
  return { mv, rate, columns };
}
