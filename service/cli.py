"""ecg-classify: classify WFDB records and CSV / JSON strips from files and folders.

For each record it writes, in --out: <name>.ecg (the beats as a WFDB annotation file, MIT beat
codes, service.signal.annotations), <name>.report.json (the rhythm report, service.report) and
<name>.png (a one-page summary); and index.json and index.csv list every record. The analysis is
the service's own: records are read by service.signal.formats, R-peaks found and beats cut by
service.signal.strips, labelled by the model registry's predictor with the model's default solver,
in-process (processes in parallel with --jobs), or sent to a running service with --url.
Usage and examples: docs/cli.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.report import CLASSES, ECTOPIC, PAUSE_THRESHOLD_S, rhythm_report
from service.signal.annotations import EXTENSION, record_name_of, write_annotations
from service.signal.formats import Lead
from service.signal.strips import StripError

INDEX_FIELDS = ["record", "source", "status", "error", "model", "version", "lead", "duration_s", "beats",
                *CLASSES, "mean_bpm", "min_bpm", "max_bpm", "V_runs", "S_runs", "pauses",
                "annotations", "report", "summary"]
STRIP_SUFFIXES = (".csv", ".txt", ".json")
LABEL_COLOURS = {"N": "#333333", "S": "#1f5fbf", "V": "#d62728", "F": "#e08a00", "Q": "#8a3ffc"}


class UsageError(Exception):
    """A command line that cannot run: printed as 'ecg-classify: error: ...', exit status 2."""


class RecordFailed(Exception):
    """One record that cannot be classified: reported in the index, the others go on."""


@dataclass(frozen=True)
class Source:
    """One input: a WFDB record (its header's path) or a CSV / JSON strip file."""

    path: Path
    kind: str  # "wfdb", "csv" or "json"
    name: str  # output file stem, unique within one run


@dataclass(frozen=True)
class Options:
    out: Path
    model: str | None
    models_dir: Path
    lead: str | None
    fs: float | None
    url: str | None
    pause_threshold_s: float
    plot: bool
    timeout_s: float


@dataclass(frozen=True)
class Analysis:
    model: str
    version: str
    fs: float
    lead: str | None  # the lead analysed, where the input names leads
    samples: np.ndarray  # R-peak sample indices
    labels: list[str]
    report: dict
    review: list[bool] | None = None  # per beat, where the model has a review threshold


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ecg-classify",
        description="Classify every beat of WFDB records and CSV / JSON strips (files or folders) and write, "
                    f"per record, a WFDB annotation file (.{EXTENSION}), the rhythm report (.report.json) and "
                    "a one-page summary (.png), plus index.json and index.csv.",
        epilog="CSV strips: one column of mV (give --fs), or two columns time (s) and mV; a header line is "
               "skipped. JSON strips: a /predict/strip request body, or an HL7 FHIR R4 Observation. "
               "See docs/cli.md.")
    p.add_argument("inputs", nargs="+", metavar="RECORD_OR_FOLDER",
                   help="a WFDB record (100, 100.hea or 100.dat), a .csv or .json strip, or a folder of them")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the results (created)")
    p.add_argument("--model", help="model name (default: the service's default context model)")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                   help="artefact folders (default: ECG_MODELS_DIR or ./models)")
    p.add_argument("--lead", help="lead name or 0-based index (default MLII, else the first)")
    p.add_argument("--fs", type=float, metavar="HZ", help="sampling rate of one-column CSV strips")
    p.add_argument("--jobs", type=int, default=1, metavar="N", help="records classified in parallel (processes)")
    p.add_argument("--url", help="classify with a running service at this URL instead of in-process")
    p.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per-record HTTP timeout with --url")
    p.add_argument("--pause-threshold", type=float, default=PAUSE_THRESHOLD_S, metavar="S",
                   help=f"RR interval above which the report lists a pause (default {PAUSE_THRESHOLD_S:g} s)")
    p.add_argument("--no-summary", dest="plot", action="store_false", help="skip the summary pictures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def collect(inputs: list[str]) -> list[Source]:
    """The records named on the command line: files as given, folders' records and strips (sorted)."""
    found: list[tuple[Path, str]] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            members = sorted(p for p in path.iterdir() if p.is_file())
            found += [(p, "wfdb") for p in members if p.suffix == ".hea"]
            found += [(p, "csv" if p.suffix != ".json" else "json") for p in members if p.suffix in STRIP_SUFFIXES]
            if not any(p.suffix in (".hea", *STRIP_SUFFIXES) for p in members):
                raise UsageError(f"folder {given} holds no WFDB records (.hea) nor CSV / JSON strips")
        elif path.suffix in STRIP_SUFFIXES and path.is_file():
            found.append((path, "json" if path.suffix == ".json" else "csv"))
        elif path.with_suffix(".hea").is_file() and path.suffix in (".hea", ".dat", ".atr", ""):
            found.append((path.with_suffix(".hea"), "wfdb"))
        elif Path(f"{path}.hea").is_file():
            found.append((Path(f"{path}.hea"), "wfdb"))
        elif path.exists():
            raise UsageError(f"{given} is not a WFDB record (no .hea beside it) nor a .csv / .json strip")
        else:
            raise UsageError(f"no such file or folder: {given}")
    sources, taken = [], set()
    for path, kind in dict.fromkeys(found):  # each file once, in the order given
        stem = record_name_of(path.stem if kind == "wfdb" else path.name.rsplit(".", 1)[0], "record")
        name, n = stem, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}"
        taken.add(name)
        sources.append(Source(path, kind, name))
    return sources


def read_csv(path: Path, fs: float | None) -> Lead:
    """One column of mV (rate from --fs) or two columns time (s), mV; a header line is skipped."""
    rows = []
    with open(path, newline="") as handle:
        for number, line in enumerate(handle, 1):
            cells = [c for c in line.replace(";", ",").replace("\t", ",").replace(" ", ",").split(",") if c.strip()]
            if not cells:
                continue
            try:
                rows.append([float(c) for c in cells])
            except ValueError:
                if rows:
                    raise RecordFailed(f"line {number} of the CSV is not numbers: {line.strip()[:40]!r}") from None
    if not rows:
        raise RecordFailed("the CSV holds no rows of numbers")
    if len({len(r) for r in rows}) != 1:
        raise RecordFailed("the CSV's rows do not all have the same number of columns")
    values = np.array(rows)
    if values.shape[1] == 1:
        if fs is None:
            raise RecordFailed("a CSV with one column needs its sampling rate: pass --fs HZ")
        return Lead(values[:, 0], fs, None)
    step = float(np.median(np.diff(values[:2001, 0]))) if len(values) > 1 else 0.0
    if not step > 0:
        raise RecordFailed("the CSV's first (time) column does not increase")
    return Lead(values[:, 1], round(1.0 / step, 3), None)


def read_json(path: Path, lead: str | None) -> Lead:
    """A /predict/strip body (StripRequest) or a FHIR Observation, read as the service reads it."""
    from pydantic import ValidationError

    from service.schemas import StripRequest
    from service.signal.formats import read_fhir, read_strip

    try:
        payload = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        raise RecordFailed(f"not valid JSON: {err}") from None
    if isinstance(payload, dict) and payload.get("resourceType") == "Observation":
        return read_fhir(payload, lead)
    try:
        request = StripRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise RecordFailed(f"not a strip request (nor a FHIR Observation): {where}: {first['msg']}") from None
    try:
        return read_strip(request)
    except StripError as err:
        raise RecordFailed(str(err)) from None


def is_observation(path: Path) -> bool:
    """A JSON file holding a FHIR Observation (else a /predict/strip body)."""
    try:
        payload = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(payload, dict) and payload.get("resourceType") == "Observation"


def wfdb_files(header: Path) -> tuple[bytes, Path]:
    """A record's header and its one signal file, as /predict/wfdb receives them."""
    text = header.read_bytes()
    lines = [line.split() for line in text.decode("ascii", "replace").splitlines()
             if line.strip() and not line.startswith("#")]
    files = {line[0] for line in lines[1:] if line}
    if len(files) != 1:
        raise RecordFailed(f"the header names {len(files)} signal files; ecg-classify reads records with one")
    signal = header.parent / files.pop()
    if not signal.is_file():
        raise RecordFailed(f"signal file {signal.name} named by the header is missing")
    return text, signal


def read_source(source: Source, options: Options) -> Lead:
    """The lead in mV, for the summary picture, read by the service's own readers as the analysis was."""
    from service.signal.formats import read_wfdb

    if source.kind == "wfdb":
        header, signal = wfdb_files(source.path)
        return read_wfdb(header, str(signal), options.lead)
    if source.kind == "csv":
        return read_csv(source.path, options.fs)
    return read_json(source.path, options.lead)


def strip_body(source: Source, options: Options, model: str | None) -> bytes:
    """A /predict/strip body for a CSV strip or a JSON strip file (its own model replaced by ours)."""
    if source.kind == "csv":
        lead = read_csv(source.path, options.fs)
        body = {"sampling_rate": lead.fs, "signal": lead.signal_mv.tolist()}
    else:
        try:
            body = json.loads(source.path.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:
            raise RecordFailed(f"not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise RecordFailed("a JSON strip must be an object: a /predict/strip body or a FHIR Observation")
        body.pop("model", None)  # the model (and its solver) are the command line's
        body.pop("solver", None)
    if model is not None:
        body["model"] = model
    return json.dumps(body).encode()


class InProcess:
    """The service's strip pipeline in this process: its strip analysis (service.runtime.strip_worker,
    which reads the record and finds and cuts its beats, as a strip worker does) and the registry's
    predictor of one model, with the model's default solver."""

    def __init__(self, options: Options):
        from service.models.registry import ModelRegistry
        from service.settings import Settings

        settings = Settings()
        folder, name = model_folder(options)
        with tempfile.TemporaryDirectory(prefix="ecg-classify-") as only:  # a registry of this one model
            os.symlink((folder / name).resolve(), Path(only) / name)
            registry = ModelRegistry.load(Path(only))
        if name not in registry.models:
            raise UsageError(f"model {name!r} cannot be loaded: {registry.failures.get(name, 'unknown error')}")
        self.loaded = registry.models[name]
        self.solver = self.default_solver(settings)

    def default_solver(self, settings):
        """The model's default solver settings, as the service applies them to a request that sets none."""
        if not self.loaded.predictor.is_ode:
            return None
        from service.models.solver import SolverConfig

        default = {k: v for k, v in self.loaded.card.get("default_solver", {}).items() if k in ("method", "rtol", "atol")}
        return SolverConfig(**default, max_num_steps=settings.max_num_steps)

    def task(self, source: Source, options: Options):
        """The strip worker's task for this input, as the service's route for its format builds it."""
        from service.runtime.strip_worker import StripTask

        name, kinds = self.loaded.name, {self.loaded.name: self.loaded.input_kind}
        if source.kind == "wfdb":
            header, signal = wfdb_files(source.path)
            return StripTask("wfdb", path=str(signal), header=header, lead=options.lead, model=name, model_kinds=kinds)
        if source.kind == "json" and is_observation(source.path):
            return StripTask("fhir", body=source.path.read_bytes(), lead=options.lead, model=name, model_kinds=kinds)
        return StripTask("strip", body=strip_body(source, options, name), model_kinds=kinds, default_model=name)

    def classify(self, source: Source, options: Options) -> Analysis:
        from service.runtime.strip_worker import BodyInvalid, analyse, unreadable

        task = self.task(source, options)
        try:
            found = analyse(task)
        except BodyInvalid as err:
            first = err.errors[0]
            raise RecordFailed(f"{'.'.join(str(x) for x in first['loc'][1:]) or 'body'}: {first['msg']}") from None
        except StripError:
            raise
        except Exception as err:  # as the service answers it: the input's fault, in words
            raise RecordFailed(unreadable(task, err)) from None
        labels, review = self.labels(found.beats, found.af_criteria) if len(found.beats) else ([], None)
        report = rhythm_report(found.peaks / found.fs, labels, found.duration_s, review=review,
                               unreadable=getattr(found, "unreadable", None),  # where the analysis gives them
                               pause_threshold_s=options.pause_threshold_s)
        return Analysis(self.loaded.name, self.loaded.version, found.fs, found.lead, found.peaks, labels, report,
                        review)

    def labels(self, beats: np.ndarray, af_criteria: np.ndarray | None) -> tuple[list[str], list[bool] | None]:
        """The model's label of each beat (with its AF criteria flag, service.signal.rhythm) and its
        review flag, through the model's decision as the service gives them; a solve that fails fails
        the record, as it fails a request."""
        from service.models.fastode import failure
        from service.runtime.inference import Result
        from service.signal.beats import CLASSES as LABELS

        prediction = self.loaded.predictor.predict(beats, self.solver)
        if prediction.status is not None and prediction.status.any():
            raise RecordFailed(f"{failure(prediction.status, self.solver)}")
        decided = Result.decided(self.loaded, beats, prediction.probabilities, None, 0.0, af_criteria)
        review = None if decided.review is None else decided.review.tolist()
        return [LABELS[i] for i in decided.labels], review


def model_folder(options: Options) -> tuple[Path, str]:
    """The artefacts folder and the model's name; a usage error naming the models there if it is not."""
    from service.settings import Settings

    settings = Settings()
    folder = options.models_dir or settings.models_dir
    name = options.model or settings.default_context_model
    if not (folder / name / "card.json").is_file():
        available = sorted(p.parent.name for p in folder.glob("*/card.json"))
        raise UsageError(f"model {name!r} not found in {folder}; available: {', '.join(available) or 'none'}")
    return folder, name


class Remote:
    """A running service: records sent to its strip routes, as any client would."""

    def __init__(self, options: Options):
        import httpx

        self.base = options.url.rstrip("/")
        self.client = httpx.Client(timeout=options.timeout_s)
        try:
            answer = self.client.get(f"{self.base}/readyz")
        except httpx.HTTPError as err:
            raise UsageError(f"cannot reach the service at {options.url}: {err}") from None
        if answer.status_code != 200:
            raise UsageError(f"the service at {options.url} is not ready (/readyz answered {answer.status_code})")

    def classify(self, source: Source, options: Options) -> Analysis:
        import httpx

        query = {k: v for k, v in (("model", options.model), ("lead", options.lead)) if v is not None}
        try:
            if source.kind == "wfdb":
                header, signal = wfdb_files(source.path)
                answer = self.client.post(f"{self.base}/predict/wfdb", params=query, files={
                    "header": (source.path.name, header), "signal": (signal.name, signal.read_bytes())})
            elif source.kind == "json" and is_observation(source.path):
                answer = self.client.post(f"{self.base}/predict/fhir", params=query, content=source.path.read_bytes(),
                                          headers={"Content-Type": "application/json"})
            else:
                answer = self.client.post(f"{self.base}/predict/strip", content=strip_body(source, options, options.model),
                                          headers={"Content-Type": "application/json"})
        except httpx.HTTPError as err:
            raise RecordFailed(f"request to {self.base} failed: {err}") from None
        if answer.status_code != 200:
            raise RecordFailed(f"the service answered {answer.status_code}: {error_text(answer)}")
        body = answer.json()
        if body.get("report") is None:
            raise RecordFailed("the service's answer has no rhythm report (an older version?)")
        report = body["report"]
        flags = [b.get("review") for b in body["beats"]]
        review = None if any(f is None for f in flags) or not flags else [bool(f) for f in flags]
        if options.pause_threshold_s != report["pause_threshold_s"]:  # the same beats, the threshold asked for
            report = rhythm_report([b["time_s"] for b in body["beats"]], [b["label"] for b in body["beats"]],
                                   report["duration_s"], review=review, unreadable=report.get("unreadable"),
                                   pause_threshold_s=options.pause_threshold_s)
        summary = body["summary"]
        return Analysis(body["model"], body["version"], summary["sampling_rate"], summary.get("lead"),
                        np.array([b["sample"] for b in body["beats"]], dtype=np.int64),
                        [b["label"] for b in body["beats"]], report, review)


def error_text(answer) -> str:
    """The message of a service's error answer (422's first detail, else the body's start)."""
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    detail = body.get("detail", body.get("error", body)) if isinstance(body, dict) else body
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        where = ".".join(str(x) for x in detail[0].get("loc", []))
        return f"{where}: {detail[0].get('msg')}" if where else str(detail[0].get("msg"))
    return str(detail)[:200]


def summary_picture(path: Path, source: Source, lead: Lead, analysis: Analysis) -> None:
    """One page: what the record holds, 10 s around the first V and the first S beat with every beat
    labelled, and the heart-rate trend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    report = analysis.report
    figure, axes = plt.subplots(3, 1, figsize=(11.69, 8.27), gridspec_kw={"height_ratios": [1, 1, 0.8]})
    counts = ", ".join(f"{c} {report['beats'][c]}" for c in CLASSES)
    hr = report["heart_rate"]
    ectopy = "; ".join(f"{c}: {e['isolated']} isolated, {e['couplets']} couplets, {len(e['runs'])} runs, "
                       f"{len(e['bigeminy'])} bigeminy, {len(e['trigeminy'])} trigeminy"
                       for c, e in report["ectopy"].items())
    figure.suptitle(f"{source.name} - {analysis.model} {analysis.version} - lead {analysis.lead or '-'} - "
                    f"{report['duration_s'] / 60:.1f} min, {report['beats']['total']} beats ({counts})\n"
                    f"heart rate {fmt(hr['min_bpm'])} / {fmt(hr['mean_bpm'])} / {fmt(hr['max_bpm'])} bpm "
                    f"(min / mean / max); pauses {len(report['pauses'])}\n{ectopy}", fontsize=9, ha="left", x=0.03)
    for axis, cls in zip(axes[:2], ECTOPIC):
        excerpt(axis, lead, analysis, cls)
    trend = hr["trend"]
    if trend:
        axes[2].stairs([np.nan if w["bpm"] is None else w["bpm"] for w in trend],
                       [w["start_s"] / 60 for w in trend] + [trend[-1]["end_s"] / 60], color="#1f5fbf", linewidth=1.5, baseline=None)
    axes[2].set_xlabel("time (min)")
    axes[2].set_ylabel("heart rate (bpm)")
    axes[2].set_title(f"heart rate per {hr['window_s']:g} s", fontsize=9)
    axes[2].grid(alpha=0.3)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def excerpt(axis, lead: Lead, analysis: Analysis, cls: str, seconds: float = 10.0) -> None:
    """The lead for `seconds` around the first beat labelled `cls`, each beat's label at its R-peak."""
    where = [i for i, label in enumerate(analysis.labels) if label == cls]
    fs = lead.fs
    if where:
        centre = analysis.samples[where[0]] / fs
        title = f"first {cls} beat at {centre:.1f} s"
    else:
        centre, title = seconds / 2, f"no {cls} beats: the first {seconds:g} s"
    start = max(0.0, min(centre - seconds / 2, lead.signal_mv.size / fs - seconds))
    a, b = int(start * fs), int(min((start + seconds) * fs, lead.signal_mv.size))
    t = np.arange(a, b) / fs
    axis.plot(t, lead.signal_mv[a:b], color="black", linewidth=0.7)
    axis.set_xlim(start, start + seconds)
    top = float(lead.signal_mv[a:b].max()) if b > a else 1.0
    for sample, label in zip(analysis.samples, analysis.labels):
        if a <= sample < b:
            axis.text(sample / fs, top, label, color=LABEL_COLOURS[label], ha="center", va="bottom",
                      fontsize=8, fontweight="bold" if label != "N" else "normal")
    axis.set_title(title, fontsize=9)
    axis.set_ylabel("mV")
    axis.set_xticks(np.arange(np.ceil(start), start + seconds + 1e-9, 1.0))
    axis.grid(which="both", color="#f4a6a6", alpha=0.5, linewidth=0.5)
    axis.margins(y=0.15)


def fmt(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def index_row(source: Source, analysis: Analysis | None, files: dict, error: str | None) -> dict:
    row = dict.fromkeys(INDEX_FIELDS)
    row.update(record=source.name, source=str(source.path), status="error" if error else "ok", error=error, **files)
    if analysis is not None:
        report = analysis.report
        row.update(model=analysis.model, version=analysis.version, lead=analysis.lead, duration_s=report["duration_s"],
                   beats=report["beats"]["total"], **{c: report["beats"][c] for c in CLASSES},
                   mean_bpm=report["heart_rate"]["mean_bpm"], min_bpm=report["heart_rate"]["min_bpm"],
                   max_bpm=report["heart_rate"]["max_bpm"], V_runs=len(report["ectopy"]["V"]["runs"]),
                   S_runs=len(report["ectopy"]["S"]["runs"]), pauses=len(report["pauses"]))
    return row


_classifier = None  # one per process: the model (or the client) is loaded once, not per record


def start_worker(options: Options) -> None:
    global _classifier
    _classifier = Remote(options) if options.url else InProcess(options)


def process(source: Source, options: Options) -> dict:
    """Classify one record and write its files; a row of the index, with the error if it failed."""
    files = {}
    try:
        analysis = _classifier.classify(source, options)
        files["annotations"] = write_annotations(options.out, source.name, analysis.samples, analysis.labels,
                                                 analysis.fs, analysis.model, analysis.version,
                                                 review=analysis.review).name
        report_path = options.out / f"{source.name}.report.json"
        report_path.write_text(json.dumps({"record": source.name, "source": str(source.path),
                                           "model": analysis.model, "version": analysis.version,
                                           "lead": analysis.lead, "sampling_rate": analysis.fs,
                                           "report": analysis.report}, indent=1))
        files["report"] = report_path.name
        if options.plot:  # the lead once more, for the picture: read as the analysis read it
            summary_picture(options.out / f"{source.name}.png", source, read_source(source, options), analysis)
            files["summary"] = f"{source.name}.png"
    except (RecordFailed, StripError) as err:
        return index_row(source, None, files, str(err))
    except Exception as err:  # one unreadable record must not end the run; its message goes in the index
        return index_row(source, None, files, f"{type(err).__name__}: {err}")
    return index_row(source, analysis, files, None)


def run(sources: list[Source], options: Options, jobs: int, quiet: bool) -> list[dict]:
    """Every record, in parallel processes when jobs > 1, with a progress bar on stderr."""
    from tqdm import tqdm

    bar = tqdm(total=len(sources), unit="record", file=sys.stderr, disable=quiet, desc="ecg-classify")
    rows: dict[str, dict] = {}

    def done(row: dict) -> None:
        rows[row["record"]] = row
        bar.update(1)
        if row["error"]:
            bar.write(f"ecg-classify: {row['record']}: {row['error']}", file=sys.stderr)

    try:
        if jobs <= 1 or len(sources) == 1:
            if _classifier is None:
                start_worker(options)
            for source in sources:
                done(process(source, options))
        else:
            import multiprocessing

            with ProcessPoolExecutor(min(jobs, len(sources)), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=start_worker, initargs=(options,)) as pool:
                for future in as_completed([pool.submit(process, s, options) for s in sources]):
                    done(future.result())
    finally:
        bar.close()
    return [rows[s.name] for s in sources]


def write_index(out: Path, rows: list[dict]) -> None:
    (out / "index.json").write_text(json.dumps(rows, indent=1))
    with open(out / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=INDEX_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.jobs < 1:
            raise UsageError("--jobs must be at least 1")
        if args.fs is not None and not args.fs > 0:
            raise UsageError("--fs must be positive")
        if not args.pause_threshold > 0:
            raise UsageError("--pause-threshold must be positive")
        sources = collect(args.inputs)
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {args.out} exists and is not a folder")
        options = Options(args.out, args.model, args.models_dir, args.lead, args.fs, args.url, args.pause_threshold,
                          args.plot, args.timeout)
        if options.url:
            start_worker(options)  # the service is reachable and ready, or a usage error
        else:
            model_folder(options)  # before any worker starts: a wrong name is a usage error, once
        args.out.mkdir(parents=True, exist_ok=True)
        rows = run(sources, options, args.jobs, args.quiet)
    except UsageError as err:
        print(f"ecg-classify: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ecg-classify: interrupted", file=sys.stderr)
        return 130
    write_index(args.out, rows)
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"ecg-classify: {len(rows) - failed} of {len(rows)} records classified; results in {args.out} "
          f"(index.json, index.csv)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
