"""The classifying routes: /predict (beats or context beats) and the three strip routes."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.report import rhythm_report
from service.signal.quality import unbroken_intervals
from service.signal.annotations import EXTENSION, MEDIA_TYPE, annotation_bytes, record_name_of
from service.signal.beats import CLASSES
from service.errors import invalid, strip_invalid
from service.runtime.inference import Inference, Result
from service.models.solver import SolverConfig
from service.models.registry import LoadedModel
from service.schemas import (
    AnswerFormat, BeatPrediction, PredictRequest, PredictResponse, RhythmReport, SolverReport, StripBeat,
    StripResponse, StripSummary, UploadOptions,
)
from service.runtime.strip_worker import BodyInvalid, StripAnalysis, StripRejected, StripTask, spool

MAX_HEADER_BYTES = 64 * 1024


class OrjsonRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """Request bodies decoded with orjson (several times faster than the standard library on
    arrays of numbers); the contract and the validation stay FastAPI's and pydantic's."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            return await handler(OrjsonRequest(request.scope, request.receive))

        return route_handler


router = APIRouter(route_class=OrjsonRoute, tags=["classify"])  # /predict
strips = APIRouter(tags=["classify"])  # whole strips: bodies read by the strip workers
uploads = APIRouter(tags=["classify"])  # WFDB multipart uploads


async def get_inference(request: Request) -> Inference:  # async: FastAPI runs sync dependencies in threads
    return request.app.state.inference


def solver_report(solver: SolverConfig | None, result: Result) -> SolverReport | None:
    if solver is None:
        return None
    nfe = result.nfe
    return SolverReport(method=solver.method, rtol=solver.rtol, atol=solver.atol, step_size=solver.step_size,
                        nfe=int(nfe.max()) if nfe.size else 0, nfe_total=int(nfe.sum()))


def probabilities_of(row: np.ndarray) -> dict[str, float]:
    return {c: float(p) for c, p in zip(CLASSES, row)}


def per_beat_nfe(result: Result) -> list:
    return [None] * len(result.probabilities) if result.nfe is None else result.nfe.tolist()


def per_beat_review(result: Result) -> list:
    return [None] * len(result.probabilities) if result.review is None else result.review.tolist()


def per_beat_af_criteria(result: Result) -> list:
    return [None] * len(result.probabilities) if result.af_criteria is None else result.af_criteria.tolist()


def log_answer(request: Request, loaded: LoadedModel, result: Result) -> None:
    """What the request's log line says about its answer (never beat data)."""
    request.state.log = {"model": loaded.name, "beats": len(result.probabilities),
                         "nfe": None if result.nfe is None else int(result.nfe.sum())}


@router.post("/predict", response_model=PredictResponse,
             responses={422: {"description": "invalid beats, model or solver settings"},
                        503: {"description": "overloaded: retry after the Retry-After header's seconds"},
                        504: {"description": "the request's deadline passed"}})
async def predict(body: PredictRequest, request: Request,
                  inference: Inference = Depends(get_inference)) -> PredictResponse:
    """Classify beats; `solver` tunes the ODE-Net's accuracy/latency trade-off. Send 187-sample
    beats in `beats` or context beats in `context_beats`, whichever the model reads (GET /models)."""
    kind = body.input_kind
    loaded = inference.resolve(body.model, ("body", "model"), kind)
    count = len(body.beats if kind == "beat" else body.context_beats)
    limit = inference.settings.max_beats_per_request
    if count > limit:
        raise invalid(("body", "beats" if kind == "beat" else "context_beats"),
                      f"at most {limit} beats per request, got {count}")
    requested = body.solver.model_dump(exclude_unset=True) if body.solver else None
    solver = inference.solver_for(requested, loaded, ("body", "solver"))
    result = await inference.classify(loaded, body.inputs(), solver, request.state.deadline, request.state.ticket)
    log_answer(request, loaded, result)
    return PredictResponse(
        model=loaded.name, version=loaded.version, solver=solver_report(solver, result),
        latency_ms=1000 * result.seconds,
        predictions=[BeatPrediction(label=CLASSES[i], class_index=int(i), probabilities=probabilities_of(row),
                                    confidence=c, review=r, nfe=n)
                     for i, row, c, r, n in zip(result.labels, result.probabilities, result.confidence.tolist(),
                                                per_beat_review(result), per_beat_nfe(result))],
    )


def strip_response(found: StripAnalysis, loaded: LoadedModel, solver: SolverConfig | None, result: Result,
                   request: Request) -> StripResponse:
    labels = result.labels
    rr = (np.diff(found.peaks) / found.fs)[unbroken_intervals(found.peaks, found.fs, found.unreadable)]
    log_answer(request, loaded, result)
    return StripResponse(
        model=loaded.name, version=loaded.version, solver=solver_report(solver, result),
        latency_ms=1000 * result.seconds, reason=found.reason,
        beats=[StripBeat(sample=int(p), time_s=float(p / found.fs), label=CLASSES[i], class_index=int(i),
                         probabilities=probabilities_of(row), confidence=c, review=r, af_criteria=a, nfe=n)
               for p, i, row, c, r, a, n in zip(found.peaks, labels, result.probabilities, result.confidence.tolist(),
                                                per_beat_review(result), per_beat_af_criteria(result),
                                                per_beat_nfe(result))],
        summary=StripSummary(
            n_beats=len(labels), counts={c: int(np.sum(labels == k)) for k, c in enumerate(CLASSES)},
            mean_heart_rate_bpm=float(60.0 / rr.mean()) if rr.size else None,
            duration_s=found.duration_s, sampling_rate=found.fs, lead=found.lead,
            leads_received=None if found.leads is None else list(found.leads)),
        report=RhythmReport.model_validate(
            rhythm_report(found.peaks / found.fs, [CLASSES[i] for i in labels], found.duration_s,
                          review=None if result.review is None else result.review.tolist(),
                          unreadable=found.unreadable)),
    )


async def strip_answer(answer: StripResponse, answer_format: str, record: str | None, fs: float):
    """The strip's answer as JSON, or (format=atr) as a WFDB annotation file to download."""
    if answer_format == "json":
        return answer
    name = record_name_of(record)
    flags = [b.review for b in answer.beats]
    review = None if None in flags else flags
    content = await run_in_threadpool(annotation_bytes, name, [b.sample for b in answer.beats],
                                      [b.label for b in answer.beats], fs, answer.model, answer.version,
                                      review=review)
    return Response(content, media_type=MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="{name}.{EXTENSION}"'})


async def analyse_strip(task: StripTask, request: Request, inference: Inference, samples_loc: tuple) -> StripAnalysis:
    """The strip read and cut by a worker process; 422 for what it cannot read, after the model and
    solver settings the request named (so a bad setting is reported first, as it is checked first)."""
    request.state.ticket.done()  # analysis takes a while: batchers need not wait for this request
    try:
        return await request.app.state.strip_workers.analyse(task, request.state.deadline)
    except StripRejected as err:
        if task.route == "strip":
            loaded = inference.resolve(err.model, ("body", "model"))
            inference.solver_for(err.solver, loaded, ("body", "solver"))
            if err.field == "lead":  # a JSON strip chooses its lead in the body, the upload routes in the query
                raise invalid(("body", "lead"), str(err)) from None
        raise strip_invalid(err, samples_loc) from None
    except BodyInvalid as err:
        raise RequestValidationError(err.errors) from None
    finally:
        if task.path is not None:
            os.unlink(task.path)


STRIP_ERRORS = {200: {"description": "the strip's beats and rhythm report (JSON), or with format=atr its beats "
                      f"as a WFDB annotation file (<record>.{EXTENSION}, MIT beat codes; docs/reports.md)",
                      "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}},
                413: {"description": "body larger than the route's limit"},
                422: {"description": "invalid strip, model or solver settings"},
                503: {"description": "overloaded: retry after the Retry-After header's seconds"},
                504: {"description": "the request's deadline passed"}}
STRIP_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/StripRequest"}}}}}
FHIR_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "description": "an HL7 FHIR Observation with valueSampledData (R4: "
               "SampledData.period; R5: SampledData.interval)"}}}}}


@strips.post("/predict/strip", response_model=StripResponse, responses=STRIP_ERRORS, openapi_extra=STRIP_BODY)
async def predict_strip(request: Request, inference: Inference = Depends(get_inference),
                        format: AnswerFormat = Query("json", description="json, or atr: a WFDB annotation file")):
    """Classify every beat of raw ECG (10 s to 60 min, 100-1000 Hz, mV or ADC units), by default
    with the context model. The body is a StripRequest: one lead as `signal`, or up to 16 named
    `leads` of which `lead` chooses the one analysed (default MLII where present, else the first;
    the shipped models read one lead)."""
    body, path = await spool(request.stream())
    task = StripTask("strip", body=body, path=path, model_kinds=inference.model_kinds(),
                     default_model=inference.default_model("context"))
    found = await analyse_strip(task, request, inference, ("body", "signal"))
    loaded = inference.resolve(found.model, ("body", "model"))
    solver = inference.solver_for(found.solver, loaded, ("body", "solver"))
    result = await inference.classify(loaded, found.beats, solver, request.state.deadline,
                                      af_criteria=found.af_criteria)
    return await strip_answer(strip_response(found, loaded, solver, result, request), format, "strip", found.fs)


@uploads.post("/predict/wfdb", response_model=StripResponse,
              responses={**STRIP_ERRORS, 400: {"description": "the body is not valid multipart form data"}})
async def predict_wfdb(request: Request, options: Annotated[UploadOptions, Query()],
                       header: UploadFile = File(..., description="the record's .hea file"),
                       signal: UploadFile = File(..., description="the signal file the header names"),
                       inference: Inference = Depends(get_inference)):
    """Classify a WFDB record (multipart upload of header and signal file); choose the lead by name."""
    loaded = inference.resolve(options.model, ("query", "model"))
    solver = inference.solver_for(options.solver(), loaded, ("query",))
    header_bytes = await header.read(MAX_HEADER_BYTES + 1)
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise invalid(("body", "header"), f"header file is larger than {MAX_HEADER_BYTES // 1024} KiB; a WFDB "
                      "header (.hea) is a few lines of text: was the signal file sent as the header?")
    path = await run_in_threadpool(copy_to_file, signal.file)
    task = StripTask("wfdb", path=path, header=header_bytes, lead=options.lead, model=loaded.name,
                     model_kinds=inference.model_kinds())
    found = await analyse_strip(task, request, inference, ("body", "signal"))
    result = await inference.classify(loaded, found.beats, solver, request.state.deadline, solver_loc=("query",),
                                      af_criteria=found.af_criteria)
    record = os.path.splitext(header.filename or "")[0] or "record"
    return await strip_answer(strip_response(found, loaded, solver, result, request), options.format, record,
                              found.fs)


@strips.post("/predict/fhir", response_model=StripResponse, responses=STRIP_ERRORS, openapi_extra=FHIR_BODY)
async def predict_fhir(request: Request, options: Annotated[UploadOptions, Query()],
                       inference: Inference = Depends(get_inference)):
    """Classify the ECG in a FHIR Observation, R4 or R5 (valueSampledData, or one component per lead)."""
    loaded = inference.resolve(options.model, ("query", "model"))
    solver = inference.solver_for(options.solver(), loaded, ("query",))
    body, path = await spool(request.stream())
    task = StripTask("fhir", body=body, path=path, lead=options.lead, model=loaded.name,
                     model_kinds=inference.model_kinds())
    found = await analyse_strip(task, request, inference, ("body", "observation"))
    result = await inference.classify(loaded, found.beats, solver, request.state.deadline, solver_loc=("query",),
                                      af_criteria=found.af_criteria)
    return await strip_answer(strip_response(found, loaded, solver, result, request), options.format,
                              "observation", found.fs)


def copy_to_file(source) -> str:
    """An uploaded file (spooled by Starlette) copied to a named temporary file for a worker."""
    with tempfile.NamedTemporaryFile(prefix="ecg-wfdb-", delete=False) as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    return handle.name
