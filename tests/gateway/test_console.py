"""The console's files and the API docs over HTTP (no browser): what is served, with which
headers, and the OpenAPI document's text from the protos' comments."""
from __future__ import annotations

from pathlib import Path

from gateway import console, openapi

ROOT = Path(__file__).resolve().parents[2]


async def test_the_console_and_the_docs_are_served_with_their_headers(client):
    for path, kind in [("/", "text/html"), ("/docs", "text/html"), ("/console/app.js", "javascript"),
                       ("/console/app.css", "text/css"), ("/console/vendor/swagger-ui/swagger-ui-bundle.js", "javascript")]:
        reply = await client.get(path, headers={"Authorization": ""})  # no token needed for the files
        assert reply.status_code == 200, path
        assert kind in reply.headers["content-type"], path
        for name, value in console.HEADERS.items():
            assert reply.headers[name] == value, (path, name)
    assert (await client.get("/redoc")).headers["location"] == "/docs"


async def test_what_is_not_a_console_file_is_the_usual_not_found(client):
    for path in ("/console/nope.js", "/console/../gateway/app.py", "/console/%2e%2e/app.py", "/console/"):
        reply = await client.get(path)
        assert reply.status_code == 404, path
        assert reply.json()["code"] == 5  # google.rpc.Status NOT_FOUND, as the API answers


def test_the_vendored_files_carry_their_licences():
    for folder in (console.FILES / "vendor").iterdir():
        assert (folder / "LICENSE").is_file(), folder
    assert (ROOT / "tests" / "gateway" / "axe" / "LICENSE").is_file()


async def test_openapi_text_comes_from_the_protos_comments(client):
    document = (await client.get("/openapi.json")).json()
    runs = document["paths"]["/api/v1/logs/llm-runs"]["get"]
    assert runs["summary"] == "The tenant's LLM runs, newest first, filtered"
    assert "aos.logs.v1.LlmRunsService.ListLlmRuns" in runs["description"] and "logs.read" in runs["description"]
    page_size = next(p for p in runs["parameters"] if p["name"] == "page_size")
    assert page_size["schema"]["minimum"] == 0  # negative is INVALID_ARGUMENT; the schema says so
    assert "negative is INVALID_ARGUMENT" in page_size["description"]
    assert page_size["example"] == 20
    trace = document["paths"]["/api/v1/logs/llm-runs/{run_id}/trace"]["get"]
    run_id = next(p for p in trace["parameters"] if p["name"] == "run_id")
    assert run_id["example"] == "tenant-demo.run-support-103" and run_id["description"]
    history = document["paths"]["/api/v1/runtime/overview/costs/history"]["get"]
    assert history["summary"].startswith("Spend per day for every ACTIVE budget")
    days = next(p for p in history["parameters"] if p["name"] == "days")
    assert "92" in days["description"] and days["example"] == 14
    # Tags, messages, fields and enum values are described too.
    assert all(tag["description"] != f"aos.{tag['name']}" for tag in document["tags"])
    schemas = document["components"]["schemas"]
    assert schemas["aos.logs.v1.LlmRun"]["description"]
    assert schemas["aos.logs.v1.LlmRun"]["properties"]["has_violation"]["description"]
    assert "`BUDGET_STATUS_BREACHED`:" in schemas["aos.overview.v1.BudgetStatus"]["description"]
    # Every page_size in the document, request bodies' included, has the minimum.
    sizes = [p["schema"] for ops in document["paths"].values() for op in ops.values()
             for p in op.get("parameters", []) if p["name"] == "page_size"]
    assert sizes and all(s["minimum"] == 0 for s in sizes)


async def test_openapi_describes_otlp_http_traces_with_its_content_types(client):
    document = (await client.get("/openapi.json")).json()
    export = document["paths"]["/v1/traces"]["post"]
    assert set(export["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert set(export["responses"]["200"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"400", "415", "429", "503"} <= set(export["responses"])
    assert "Retry-After" in export["responses"]["429"]["headers"]
    assert "evidence.write" in export["description"]
    assert any(tag["name"] == "TraceService" for tag in document["tags"])
    # What the document says is what the route does: a JSON body in its outline is answered in JSON
    # (here 403: the console's token is a HUMAN's, and evidence.write is for AGENT or SYSTEM callers).
    reply = await client.post("/v1/traces", json={"resourceSpans": []})
    assert reply.status_code == 403 and reply.headers["content-type"].startswith("application/json")


def test_every_service_and_method_has_a_comment():
    """The descriptor set carries the source info (gen_protos --include_source_info): a proto
    without comments would give the docs bare RPC names."""
    comments = openapi.comments()
    from gateway.backends import SERVICE_BACKENDS, service_descriptor
    for name in SERVICE_BACKENDS:
        service = service_descriptor(name)
        assert comments.get(service.full_name), service.full_name
        for method in service.methods:
            assert comments.get(method.full_name), method.full_name


def test_make_run_prints_a_link_that_signs_the_demo_tenant_in(capsys):
    """The link carries the demo token in the fragment (never sent to a server, never logged)."""
    import jwt

    from aos_runtime.config import Settings
    from services.__main__ import _announce

    settings = Settings.from_env({})
    _announce(settings, "s" * 32)
    lines = capsys.readouterr().out.splitlines()
    link = lines[lines.index(next(line for line in lines if line.startswith("Console, signed in as"))) + 2].strip()
    base, _, token = link.partition("/#token=")
    assert base == f"http://{settings.bind_host}:{settings.ports['gateway']}"
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"], audience=settings.audience)
    assert claims["tenant_id"] == "tenant-demo"
