"""Property-based fuzzing of every operation in the OpenAPI schema (schemathesis' hypothesis
strategies) against a real uvicorn: inputs the schema allows and inputs that break it; whatever a
client sends, the answer is never a server error. The health answers and the WFDB upload also
conform to the schema: every status they give and its content type are the documented ones."""

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance

from conftest import served

CASES_PER_OPERATION = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 60}
MIN_CASES = 1000
CONFORMING = {"GET /v2/health/live", "GET /v2/health/ready", "POST /predict/wfdb"}


def test_no_input_makes_a_server_error():
    calls: list[tuple[str, int]] = []
    failures: list[str] = []
    with served(request_timeout_s=20) as (base, _):
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        for result in schema.get_all_operations():
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            for mode, examples in CASES_PER_OPERATION.items():

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                def call(case):
                    response = case.call(base_url=base, timeout=60)
                    calls.append((label, response.status_code))
                    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
                    if label in CONFORMING:
                        try:
                            case.validate_response(response, checks=[status_code_conformance,
                                                                     content_type_conformance])
                        except Exception as err:  # schemathesis' failure groups
                            raise AssertionError(f"{label}: {response.status_code} does not conform: "
                                                 f"{str(err).splitlines()[0][:200]}") from None

                try:
                    call()
                except AssertionError as err:
                    failures.append(str(err).splitlines()[0])
                except Unsatisfiable:  # nothing in this operation can break the schema (a GET without inputs)
                    assert mode == GenerationMode.NEGATIVE, label
    operations = {label for label, _ in calls}
    assert not failures, failures
    assert len(calls) >= MIN_CASES, f"only {len(calls)} cases over {len(operations)} operations"
    assert {"POST /predict", "POST /predict/strip", "POST /predict/wfdb", "POST /predict/fhir",
            "POST /v2/models/{name}/infer"} <= operations
    print(f"{len(calls)} cases over {len(operations)} operations, statuses {sorted({s for _, s in calls})}")
