"""ecg-classify as a user runs it: the console script over the bundled records, in parallel, in-process
and against a real uvicorn-served service, and what it says about inputs it cannot read."""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import wfdb
from wfdb import processing

from service.signal.annotations import EXTENSION
from service.signal.beats import AAMI_GROUPS

from conftest import FIXTURES, MODELS, ROOT, served

RECORDS = ("100", "208", "232")
MIT_BEATS = set("NSVFQ")
COMMAND = shutil.which("ecg-classify", path=os.path.dirname(sys.executable))


def classify(*args, timeout=300):
    """Run the installed console script; (exit status, stdout, stderr)."""
    done = subprocess.run([COMMAND, *map(str, args), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "ECG_MODELS_DIR": str(MODELS)})
    return done.returncode, done.stdout, done.stderr


def beats_of(folder, record):
    annotation = wfdb.rdann(str(folder / record), EXTENSION)
    keep = np.isin(annotation.symbol, list(MIT_BEATS))
    return annotation.sample[keep], list(np.asarray(annotation.symbol)[keep])


def scored(folder, record):
    reference = wfdb.rdann(str(FIXTURES / record), "atr")
    truth = np.array([s for s, sym in zip(reference.sample, reference.symbol) if sym in AAMI_GROUPS])
    comparison = processing.compare_annotations(truth, beats_of(folder, record)[0], int(0.15 * 360))
    comparison.compare()
    return comparison


@pytest.fixture(scope="module")
def fixtures_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("classified")
    status, _, stderr = classify(FIXTURES, "--out", out, "--jobs", "2")
    assert status == 0, stderr
    return out, stderr


def test_help_prints_usage_and_touches_nothing(tmp_path):
    status, stdout, _ = classify("--help", "--out", tmp_path / "never")
    assert status == 0 and "usage: ecg-classify" in stdout and "--jobs" in stdout and "--url" in stdout
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("script", ["ecg-classify", "ecg-serve", "ecg-train", "ecg-evaluate", "ecg-crossval"])
def test_every_console_script_answers_help_without_starting_anything(script):
    command = shutil.which(script, path=os.path.dirname(sys.executable))
    done = subprocess.run([command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "ECG_PORT": "1"})  # a server would fail on port 1, not wait
    assert done.returncode == 0 and done.stdout.startswith(f"usage: {script}"), done.stderr


@pytest.mark.parametrize("record", RECORDS)
def test_beat_detection_finds_every_reference_beat(fixtures_out, record):
    out, stderr = fixtures_out
    assert scored(out, record).sensitivity >= 0.99
    assert "3 of 3 records classified" in stderr


@pytest.mark.parametrize("record", RECORDS)
def test_every_beat_written_is_a_reference_beat(fixtures_out, record):
    out, _ = fixtures_out
    assert scored(out, record).positive_predictivity >= 0.99


def test_the_beats_flagged_for_review_are_marked_in_the_annotations_and_counted_in_the_report(fixtures_out):
    out, _ = fixtures_out
    flagged = 0
    for record in RECORDS:
        annotation = wfdb.rdann(str(out / record), EXTENSION)
        notes = [n for s, n in zip(annotation.symbol, annotation.aux_note) if s in MIT_BEATS]
        report = json.loads((out / f"{record}.report.json").read_text())["report"]
        assert report["review"]["beats"] == notes.count("review")
        assert set(notes) <= {"", "review"}
        flagged += notes.count("review")
    assert flagged  # context-odenet flags its least sure beats (record 208's, 232's)


def test_each_record_gets_its_report_and_summary_and_the_index_lists_them(fixtures_out):
    out, _ = fixtures_out
    rows = json.loads((out / "index.json").read_text())
    assert [r["record"] for r in rows] == list(RECORDS) and {r["status"] for r in rows} == {"ok"}
    with open(out / "index.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [r["record"] for r in table] == list(RECORDS)
    for row in rows:
        record = row["record"]
        saved = json.loads((out / row["report"]).read_text())
        samples, labels = beats_of(out, record)
        assert saved["model"] == row["model"] == "context-odenet" and saved["lead"] == "MLII"
        assert saved["report"]["beats"]["total"] == len(samples) == row["beats"]
        assert saved["report"]["beats"]["V"] == labels.count("V") == row["V"]
        assert saved["report"]["duration_s"] == pytest.approx(120.0)
        assert (out / row["summary"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    v_208 = json.loads((out / "208.report.json").read_text())["report"]["ectopy"]["V"]
    assert v_208["isolated"] + 2 * v_208["couplets"] > 40  # record 208's frequent PVCs and couplets


def write_csv_strip(path, with_time=True):
    record = wfdb.rdrecord(str(FIXTURES / "100"), physical=True)
    with open(path, "w") as handle:
        handle.write("time_s,MLII_mV\n" if with_time else "mV\n")
        for i, v in enumerate(record.p_signal[:, 0]):
            handle.write(f"{i / 360:.6f},{v:.3f}\n" if with_time else f"{v:.3f}\n")


def test_url_mode_sends_records_and_strips_to_a_running_service(fixtures_out, tmp_path):
    out, _ = fixtures_out
    write_csv_strip(tmp_path / "strip100.csv")
    inputs = [FIXTURES / "100", FIXTURES / "208.hea", tmp_path / "strip100.csv", ROOT / "examples" / "strip.json"]
    with served() as (base, _):
        status, _, stderr = classify(*inputs, "--out", tmp_path / "remote", "--url", base, "--no-summary")
    assert status == 0, stderr
    remote = tmp_path / "remote"
    for record in ("100", "208"):  # the service's answer is the in-process one
        assert beats_of(remote, record)[0].tolist() == beats_of(out, record)[0].tolist()
        assert beats_of(remote, record)[1] == beats_of(out, record)[1]
    assert beats_of(remote, "strip100")[0].tolist() == beats_of(out, "100")[0].tolist()
    rows = json.loads((remote / "index.json").read_text())
    assert [r["record"] for r in rows] == ["100", "208", "strip100", "strip"]
    assert rows[3]["status"] == "ok" and rows[3]["beats"] > 0 and rows[0]["summary"] is None


def test_an_unreachable_service_is_a_clear_usage_error(tmp_path):
    status, _, stderr = classify(FIXTURES / "100", "--out", tmp_path / "out", "--url", "http://127.0.0.1:9")
    assert status == 2 and "cannot reach the service at http://127.0.0.1:9" in stderr
    assert not (tmp_path / "out").exists()
    assert "Traceback" not in stderr


def test_inputs_that_cannot_be_read_are_named_with_the_reason(tmp_path):
    shutil.copy(FIXTURES / "100.hea", tmp_path / "100.hea")
    (tmp_path / "100.dat").write_bytes((FIXTURES / "100.atr").read_bytes())  # an annotation file as signal
    write_csv_strip(tmp_path / "onecolumn.csv", with_time=False)
    (tmp_path / "broken.json").write_text('{"sampling_rate": 360, "signal": [1, 2')
    status, _, stderr = classify(tmp_path, "--out", tmp_path / "out", "--no-summary")
    assert status == 1 and "Traceback" not in stderr
    rows = {r["record"]: r for r in json.loads((tmp_path / "out" / "index.json").read_text())}
    assert rows["onecolumn"]["error"] == "a CSV with one column needs its sampling rate: pass --fs HZ"
    assert rows["broken"]["error"].startswith("not valid JSON")
    assert rows["100"]["status"] == "error" and rows["100"]["error"]
    for name in ("100", "onecolumn", "broken"):
        assert f"ecg-classify: {name}: " in stderr


@pytest.mark.parametrize("args, message", [
    (["/no/such/record", "--out", "{out}"], "no such file or folder: /no/such/record"),
    ([FIXTURES / "100", "--out", "{out}", "--model", "nope"], "model 'nope' not found"),
    ([FIXTURES / "100", "--out", "{out}", "--jobs", "0"], "--jobs must be at least 1"),
    ([FIXTURES / "README.md", "--out", "{out}"], "is not a WFDB record"),
])
def test_bad_command_lines_exit_2_with_a_message(tmp_path, args, message):
    status, _, stderr = classify(*[str(a).replace("{out}", str(tmp_path / "out")) for a in args])
    assert status == 2 and stderr.startswith("ecg-classify: error: ") and message in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out").exists()
