"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid; every response must be a non-5xx that
matches the documented status codes, content type and response schema.
"""

from __future__ import annotations

import pytest
from conftest import require_module

schemathesis = require_module("schemathesis", "API fuzzing from the OpenAPI schema")
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "test-only-admin-token-for-fuzzing"


@pytest.fixture(scope="module")
def api_schema(shipped_service, tmp_path_factory):
    from fer.config import Settings
    from fer.serving.app import create_app

    app = create_app(
        Settings(ui=False, admin_token=ADMIN_TOKEN, registry_dir=str(tmp_path_factory.mktemp("fuzz-registry"))),
        service=shipped_service,
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema_under_fuzzing(case):
    # Every check but one: "schema-valid data is accepted" cannot hold for an image upload, whose
    # schema (a binary file) admits any bytes while only real images can be accepted. The hostile
    # corpus (test_hostile.py) pins what each kind of bad upload gets instead.
    excluded = [positive_data_acceptance]
    if case.operation.path == "/predict/batch":
        # By design a batch answers 200 with each file's own status inside (a bad file must not
        # fail the others), so "schema-violating data is rejected" applies per item, not to the
        # response; test_batch.py pins those per-item statuses.
        excluded.append(negative_data_rejection)
    case.call_and_validate(excluded_checks=excluded)
