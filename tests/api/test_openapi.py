"""The OpenAPI spec: run fields typed from the ``livt_core`` configs, camelCase operation ids,
error answers with their bodies, and the docs pages served from the package."""

from __future__ import annotations

import pytest

from livt_core import catalog
from livt_core.config import CONFIG_CLASSES
from livt_core.limits import MAX_EPOCHS

#: the spec does not depend on the database
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").json()


def test_job_specs_type_every_run_field_of_their_config(spec):
    schemas = spec["components"]["schemas"]
    for kind, name in (
        ("pretrain", "PretrainJobCreate"),
        ("finetune", "FinetuneJobCreate"),
        ("evaluate", "EvaluateJobCreate"),
    ):
        schema = schemas[name]
        run_fields = set(CONFIG_CLASSES[kind].model_fields) - {"kind", "init", "checkpoint"}
        assert run_fields <= set(schema["properties"]), kind
        assert schema["additionalProperties"] is False
        model = schema["properties"]["model"]
        family = "mae" if kind == "pretrain" else "vit"
        assert model["enum"] and all(catalog.model_family(m) == family for m in model["enum"])
    finetune = schemas["FinetuneJobCreate"]["properties"]
    assert finetune["epochs"]["type"] == "integer"
    assert (finetune["epochs"]["minimum"], finetune["epochs"]["maximum"]) == (1, MAX_EPOCHS)
    assert "training epochs" in finetune["epochs"]["description"]
    assert (finetune["smoothing"]["minimum"], finetune["smoothing"]["maximum"]) == (0, 1)
    assert finetune["amp"]["enum"] == ["auto", "bf16", "fp16", "off"]
    assert set(finetune["loss"]["enum"]) == set(catalog.list_losses())
    assert finetune["tau"]["type"] == "number" and "τ" in finetune["tau"]["description"]
    data = finetune["data"]
    assert data["additionalProperties"] is False and "required" not in data
    assert data["properties"]["img_size"]["minimum"] == 8
    assert "fashion-mnist-lt" in data["properties"]["dataset"]["enum"]
    # the service's own fields keep their schema
    assert finetune["init"]["anyOf"][0] == {"$ref": "#/components/schemas/InitRef"}


def test_operation_ids_are_camel_case(spec):
    ids = {
        (method, path): op["operationId"]
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
    }
    assert ids[("post", "/jobs")] == "createJob"
    assert ids[("get", "/jobs/{job_id}/export")] == "exportJob"
    assert ids[("get", "/jobs/{job_id}/metrics")] == "jobMetrics"
    assert len(set(ids.values())) == len(ids)
    assert all("_" not in i for i in ids.values())


def test_error_answers_are_documented_with_their_bodies(spec):
    error = {"$ref": "#/components/schemas/ErrorMessage"}
    invalid = {"$ref": "#/components/schemas/ValidationErrors"}

    def body(path, method, code):
        return spec["paths"][path][method]["responses"][code]["content"]["application/json"][
            "schema"
        ]

    for code in ("401", "409", "413", "503"):
        assert body("/jobs", "post", code) == error, code
    assert body("/jobs", "post", "422") == invalid
    for code in ("401", "404", "409", "503"):
        assert body("/jobs/{job_id}/export", "get", code) == error, code
    assert body("/jobs/{job_id}", "get", "404") == error
    assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]
    problem = spec["components"]["schemas"]["FieldProblem"]
    assert set(problem["required"]) == {"loc", "msg", "type"}


def test_a_documented_error_body_is_what_the_api_answers(client, user):
    unauthorized = client.get("/jobs")
    assert unauthorized.status_code == 401 and isinstance(unauthorized.json()["detail"], str)
    invalid = client.post("/jobs", json={"kind": "finetune", "epochs": 0}, headers=user.headers)
    assert invalid.status_code == 422
    [problem] = [p for p in invalid.json()["detail"] if p["loc"][-1] == "epochs"]
    assert set(problem) == {"loc", "msg", "type"}


def test_docs_pages_load_the_packaged_ui_only(client):
    swagger = client.get("/docs")
    assert swagger.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in swagger.text
    assert "cdn.jsdelivr" not in swagger.text and "https://" not in swagger.text
    assert "default-src 'self'" in swagger.headers["content-security-policy"]
    redoc = client.get("/redoc")
    assert "/static/vendor/redoc/redoc.standalone.js" in redoc.text
    assert "fonts.googleapis" not in redoc.text
    for asset in (
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/vendor/swagger-ui/LICENSE",
        "/static/vendor/redoc/redoc.standalone.js",
        "/static/vendor/redoc/LICENSE",
    ):
        assert client.get(asset).status_code == 200, asset
