"""Property-based fuzzing of the whole API from its own OpenAPI spec (schemathesis).

Every operation gets valid (positive) and invalid (negative) requests, authenticated with a real
token, on both back-ends (a fresh SQLite file and a PostgreSQL schema), against the ASGI app.
A finished job seeded up front gives the ``/jobs/{job_id}/...`` operations something to find.
Asserted: no response is a 5xx and every response conforms to the schema documented for it.
Bounded by ``FUZZ_EXAMPLES`` per operation and mode (``LIVT_TEST_FUZZ_EXAMPLES`` to change it;
60 take 30-40 s per back-end on 2 cores). The token is set on every case, negative ones too
(schemathesis would otherwise drop it from some of them, which only exercises the 401).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

pytestmark = pytest.mark.slow

#: Examples per operation and generation mode.
FUZZ_EXAMPLES = int(os.environ.get("LIVT_TEST_FUZZ_EXAMPLES", "60"))
CHECKS = [not_a_server_error, response_schema_conformance]


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return f"{self.requests} requests ({codes}), {len(self.failures)} failures"


def _fuzz_operation(operation, mode, headers, seeded_job: str, report: FuzzReport) -> None:
    rng = random.Random(0)

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        params = case.path_parameters or {}
        # reach past the 404 half of the time; never delete the seeded job, which the later
        # operations need
        if "job_id" in params and operation.method.lower() != "delete" and rng.random() < 0.5:
            params["job_id"] = seeded_job
        report.requests += 1
        try:
            case.headers = {**(case.headers or {}), **headers}
            response = case.call()
        except Exception as exc:  # the app raised: what a client would see as a 500
            report.statuses[500] += 1
            report.failures.append(
                f"{operation.method.upper()} {operation.path} [{mode.value}] raised "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            )
            return
        report.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except Exception as exc:  # collect them all instead of shrinking one
            first = str(exc).strip().splitlines()[:6]
            report.failures.append(
                f"{operation.method.upper()} {operation.path} [{mode.value}] -> "
                f"{response.status_code}: {' | '.join(first)}\n  {case.as_curl_command()}"
            )

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters or body)


def test_fuzzed_requests_never_get_a_5xx_or_break_the_schema(app, user, make_job) -> None:
    seeded = make_job(status="succeeded")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    report = FuzzReport()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, user.headers, seeded.id, report)
    elapsed = time.monotonic() - started
    print(f"schemathesis: {report.summary()} in {elapsed:.0f} s")
    assert report.requests > 0
    assert not report.failures, report.summary() + "\n" + "\n".join(report.failures[:30])
    assert not any(code >= 500 for code in report.statuses), report.summary()
