"""The Open Inference Protocol V2 REST API (KServe's predict v2, which Triton implements), with
Triton's binary tensor data extension, so any OIP client (tritonclient, KServe's) can call us.

Each model has one input tensor "beats", FP32 [n, input_size]: 187-sample beats, or context beats
as service.signal.context.network_input builds them (window, template, RR features). Outputs:
"probabilities" FP32 [n, 5], "class_index" INT32 [n], "label" BYTES [n], "confidence" FP32 [n]
(the label's probability), "review" BOOL [n] for models with a review threshold
(service.models.decision) and, for ODE-Nets, "nfe" INT32 [n] (each beat's function evaluations).
Solver settings travel in the request's `parameters` ("method", "rtol", "atol", "step_size");
Triton's "timeout" parameter (microseconds) sets the deadline. Binary: a request whose JSON header is followed by raw tensor bytes says so with
the Inference-Header-Content-Length header and `binary_data_size` on its input; outputs come back
binary where `binary_data` or `binary_data_output` asks for it. Errors are {"error": "..."}:
400 for a bad request, 404 for an unknown model, version or route, 405 for a method a route does
not take, 408 for a body not received in time, 503 overloaded (Retry-After), 504 past the
deadline. Health answers are JSON too: {"live": true}, {"ready": true}.
"""

from __future__ import annotations

import struct
import time

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from service.api.classify import log_answer
from service.errors import quoted
from service.runtime.batching import Overloaded, Timeout
from service.signal.beats import CLASSES
from service.runtime.inference import Inference, Result
from service.models.registry import LoadedModel
from service.schemas import SolverRequest

HEADER_LENGTH = "inference-header-content-length"
INPUT = "beats"
SOLVER_PARAMETERS = ("method", "rtol", "atol", "step_size")
MAX_ID_LENGTH = 256
ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}
TENSOR = {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
    "datatype": {"type": "string"}, "parameters": {"type": "object"},
    "data": {"type": "array", "items": {"type": "number"}}}}
INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string"},
    "parameters": {"type": "object", "description": "method, rtol, atol, step_size (ODE-Nets); "
                   "binary_data_output; timeout (microseconds)"},
    "inputs": {"type": "array", "items": TENSOR},
    "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "parameters": {"type": "object"}}}}}}
INFER_DOC = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": INFER_REQUEST},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
RESPONSES = {400: {"description": "bad request", **ERROR}, 404: {"description": "unknown model or version", **ERROR},
             503: {"description": "overloaded or not ready", **ERROR}, 504: {"description": "deadline passed", **ERROR}}

router = APIRouter(prefix="/v2", tags=["open inference protocol"])


class OIPError(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


def error_response(err: OIPError, headers: dict | None = None) -> Response:
    """The protocol's error answer, {"error": "..."} (tritonclient reads nothing else); also for
    unknown routes and methods under /v2 and for refusals before the route (the app's handler)."""
    headers = dict(headers or {})
    if err.retry_after_s:
        headers["Retry-After"] = str(max(1, round(err.retry_after_s)))
    return Response(orjson.dumps({"error": str(err)}), status_code=err.status, media_type="application/json",
                    headers=headers or None)


def inference_of(request: Request) -> Inference:
    inference = getattr(request.app.state, "inference", None)
    if inference is None:
        raise OIPError(503, "the server is still loading its models")
    return inference


def model_of(request: Request, name: str, version: str | None = None) -> LoadedModel:
    loaded = inference_of(request).registry.models.get(name)
    if loaded is None:
        raise OIPError(404, f"unknown model {quoted(name)}")
    if version is not None and version != loaded.version:
        raise OIPError(404, f"model {name!r} has version {loaded.version!r}, not {quoted(version)}")
    return loaded


def outputs_of(loaded: LoadedModel) -> list[dict]:
    n = -1
    outputs = [{"name": "probabilities", "datatype": "FP32", "shape": [n, len(CLASSES)]},
               {"name": "class_index", "datatype": "INT32", "shape": [n]},
               {"name": "label", "datatype": "BYTES", "shape": [n]}]
    outputs.append({"name": "confidence", "datatype": "FP32", "shape": [n]})
    if loaded.decision.review_below is not None:
        outputs.append({"name": "review", "datatype": "BOOL", "shape": [n]})
    if loaded.predictor.is_ode:
        outputs.append({"name": "nfe", "datatype": "INT32", "shape": [n]})
    return outputs


def metadata(loaded: LoadedModel) -> dict:
    return {"name": loaded.name, "versions": [loaded.version], "platform": loaded.predictor.backend,
            "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, loaded.input_size]}],
            "outputs": outputs_of(loaded),
            "parameters": {"input_kind": loaded.input_kind, "classes": list(CLASSES),
                           "solver_parameters": list(SOLVER_PARAMETERS) if loaded.predictor.is_ode else []}}


@router.get("", responses=RESPONSES)
async def server_metadata(request: Request) -> dict:
    """Server metadata: name, version, protocol extensions."""
    return {"name": "ecg-odenet", "version": request.app.version, "extensions": ["binary_tensor_data"]}


HEALTH = {"content": {"application/json": {"schema": {"type": "object", "properties": {
    "live": {"type": "boolean"}, "ready": {"type": "boolean"}}}}}}


@router.get("/health/live", responses={200: {"description": "live", **HEALTH}})
async def server_live() -> Response:
    """Liveness: 200 {"live": true}."""
    return Response(b'{"live":true}', media_type="application/json")


@router.get("/health/ready", responses={200: {"description": "ready", **HEALTH}, **RESPONSES})
async def server_ready(request: Request) -> Response:
    """Readiness: 200 {"ready": true} when every model is loaded and warm and the server is not
    draining, else 503 {"error": ...}."""
    registry = getattr(request.app.state, "registry", None)
    if getattr(request.app.state, "draining", False) or registry is None or not registry.ready:
        return error_response(OIPError(503, "not ready"))
    return Response(b'{"ready":true}', media_type="application/json")


@router.get("/models/{name}", responses=RESPONSES)
@router.get("/models/{name}/versions/{version}", responses=RESPONSES)
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    """A model's metadata: versions, platform, input and output tensors."""
    try:
        return Response(orjson.dumps(metadata(model_of(request, name, version))), media_type="application/json")
    except OIPError as err:
        return error_response(err)


@router.get("/models/{name}/ready", responses=RESPONSES)
@router.get("/models/{name}/versions/{version}/ready", responses=RESPONSES)
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    """A model's readiness: 200 when loaded and warm."""
    try:
        model_of(request, name, version)
    except OIPError as err:
        return error_response(err)
    if getattr(request.app.state, "draining", False):
        return error_response(OIPError(503, "draining"))
    return Response(status_code=200)


def split_body(body: bytes, header_length: str | None) -> tuple[dict, memoryview]:
    """The JSON header (the whole body unless Inference-Header-Content-Length says otherwise) and
    the binary section after it."""
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise OIPError(400, "Inference-Header-Content-Length must be an integer") from None
        if not 0 < size <= len(body):
            raise OIPError(400, f"Inference-Header-Content-Length {size} is outside the body of {len(body)} bytes")
    try:
        header = orjson.loads(body[:size])
    except orjson.JSONDecodeError as err:
        raise OIPError(400, f"the request header is not valid JSON: {err}") from None
    if not isinstance(header, dict):
        raise OIPError(400, "the request must be a JSON object")
    return header, memoryview(body)[size:]


def read_tensor(header: dict, binary: memoryview, loaded: LoadedModel, limit: int) -> np.ndarray:
    """The "beats" input as float32 (n, input_size), from JSON data or the binary section."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise OIPError(400, f"'inputs' must hold exactly one tensor, {INPUT!r}")
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise OIPError(400, f"unknown input {str(tensor.get('name'))[:64]!r}; model {loaded.name!r} has one input, "
                            f"{INPUT!r}")
    if tensor.get("datatype") != "FP32":
        raise OIPError(400, f"input {INPUT!r} must be FP32")
    shape = tensor.get("shape")
    width = loaded.input_size
    if (not isinstance(shape, list) or len(shape) != 2 or not all(type(d) is int for d in shape)
            or shape[1] != width or not 1 <= shape[0] <= limit):
        raise OIPError(400, f"input {INPUT!r} must have shape [n, {width}] with 1 <= n <= {limit}")
    count = shape[0] * width
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise OIPError(400, "input parameters must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if type(size) is not int or size != 4 * count or len(binary) < size:
            raise OIPError(400, f"binary_data_size must be {4 * count} bytes (FP32 [{shape[0]}, {width}]) and "
                                "present after the JSON header")
        values = np.frombuffer(binary[:size], dtype="<f4")
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise OIPError(400, f"input {INPUT!r} needs 'data' or binary_data_size")
        try:
            values = np.asarray(data, dtype=np.float32).reshape(-1)
        except (ValueError, TypeError):
            raise OIPError(400, f"input {INPUT!r} data must be numbers") from None
        if values.size != count:
            raise OIPError(400, f"input {INPUT!r} has {values.size} values; shape {shape} needs {count}")
    beats = values.reshape(shape[0], width)
    low, high = (0.0, 1.0) if loaded.input_kind == "beat" else (-100.0, 100.0)
    if not (low <= beats.min() and beats.max() <= high):  # False for NaN too (min and max propagate it)
        if not np.all(np.isfinite(beats)):
            raise OIPError(400, f"input {INPUT!r} holds NaN or infinite values")
        raise OIPError(400, f"input {INPUT!r} values must lie in [{low:g}, {high:g}]")
    return np.ascontiguousarray(beats)


def solver_parameters(parameters: dict) -> dict | None:
    given = {k: parameters[k] for k in SOLVER_PARAMETERS if k in parameters}
    if not given:
        return None
    try:
        return SolverRequest.model_validate(given).model_dump(exclude_unset=True)
    except ValidationError as err:
        first = err.errors()[0]
        raise OIPError(400, f"parameter {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def output_tensors(loaded: LoadedModel, result: Result) -> dict[str, tuple[str, list, np.ndarray | list]]:
    n = len(result.probabilities)
    out = {"probabilities": ("FP32", [n, len(CLASSES)], result.probabilities.astype(np.float32)),
           "class_index": ("INT32", [n], result.labels.astype(np.int32)),
           "label": ("BYTES", [n], [CLASSES[i] for i in result.labels]),
           "confidence": ("FP32", [n], result.confidence.astype(np.float32))}
    if result.review is not None:
        out["review"] = ("BOOL", [n], result.review.astype(bool))
    if result.nfe is not None:
        out["nfe"] = ("INT32", [n], result.nfe.astype(np.int32))
    return out


def raw_bytes(datatype: str, data) -> bytes:
    if datatype == "BYTES":  # each element: 4-byte little-endian length, then the bytes
        return b"".join(struct.pack("<I", len(s)) + s.encode() for s in data)
    return np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()


def requested_outputs(header: dict, available: dict, binary_default: bool) -> list[tuple[str, bool]]:
    outputs = header.get("outputs")
    if outputs is None:
        return [(name, binary_default) for name in available]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise OIPError(400, "'outputs' must be a list of objects")
    chosen = []
    for output in outputs:
        name = output.get("name")
        if name not in available:
            raise OIPError(400, f"unknown output {str(name)[:64]!r}; outputs: {', '.join(available)}")
        parameters = output.get("parameters") or {}
        chosen.append((name, bool(parameters.get("binary_data", binary_default)) if isinstance(parameters, dict)
                       else binary_default))
    return chosen


@router.post("/models/{name}/infer", openapi_extra=INFER_DOC, responses=RESPONSES)
@router.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_DOC, responses=RESPONSES)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    """Classify the beats of the "beats" tensor; solver settings in `parameters`."""
    try:
        return await run_inference(request, name, version)
    except OIPError as err:
        return error_response(err)


async def run_inference(request: Request, name: str, version: str | None) -> Response:
    loaded = model_of(request, name, version)
    inference = inference_of(request)
    body = await request.body()
    if time.monotonic() > request.state.deadline:  # not parsed: nobody waits for its answer (lean.py)
        raise OIPError(504, "the request's deadline passed before its body was parsed")
    header, binary = split_body(body, request.headers.get(HEADER_LENGTH))
    request_id = header.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > MAX_ID_LENGTH):
        raise OIPError(400, f"'id' must be a string of at most {MAX_ID_LENGTH} characters")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise OIPError(400, "'parameters' must be an object")
    beats = read_tensor(header, binary, loaded, inference.settings.max_beats_per_request)
    deadline = request.state.deadline
    timeout_us = parameters.get("timeout")
    if timeout_us is not None:
        if type(timeout_us) is not int or timeout_us <= 0:
            raise OIPError(400, "parameter 'timeout' must be a positive integer (microseconds)")
        deadline = min(deadline, time.monotonic() + timeout_us / 1e6)
    try:
        solver = inference.solver_for(solver_parameters(parameters), loaded, ("parameters",))
        result = await inference.classify(loaded, beats, solver, deadline, request.state.ticket, ("parameters",))
    except RequestValidationError as err:
        raise OIPError(400, "; ".join(e["msg"] for e in err.errors())) from None
    except Overloaded as err:
        raise OIPError(503, f"overloaded: {err}; retry later", inference.settings.retry_after_s) from None
    except Timeout as err:
        raise OIPError(504, f"the request's deadline passed ({err})") from None
    log_answer(request, loaded, result)
    available = output_tensors(loaded, result)
    chosen = requested_outputs(header, available, bool(parameters.get("binary_data_output", False)))
    response = {"model_name": loaded.name, "model_version": loaded.version, "outputs": []}
    if request_id is not None:
        response["id"] = request_id
    if solver is not None:
        response["parameters"] = {"method": solver.method, "rtol": solver.rtol, "atol": solver.atol,
                                  **({"step_size": solver.step_size} if solver.step_size else {})}
    chunks = []
    for output_name, as_binary in chosen:
        datatype, shape, data = available[output_name]
        tensor = {"name": output_name, "datatype": datatype, "shape": shape}
        if as_binary:
            raw = raw_bytes(datatype, data)
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = data if isinstance(data, list) else data.reshape(-1).tolist()
        response["outputs"].append(tensor)
    body = orjson.dumps(response)
    if not chunks:
        return Response(body, media_type="application/json")
    return Response(body + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(body))})
