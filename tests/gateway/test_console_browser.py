"""The web console in a real browser: Debian's chromium, headless, driven by Playwright, against
the gateway on a real socket in front of the in-process suite and the demo data.

Each test is one question of issue #24 a person must answer without reading JSON: what needs my
attention, what did this run do, where did it break policy, can I prove it to an auditor. What
the page shows is compared with what the API answers for the same call, never with numbers
written here. Every page is also checked by axe-core (no serious or critical violation) and for
Content-Security-Policy violations.

Without a browser: in CI (CI set) these tests fail — .ci/run installs chromium — elsewhere they
skip, saying how to install it. CONSOLE_SCREENSHOTS=DIR saves a screenshot of each page
they visit.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_recording import note
from tests.e2e.support import ACME, DEMO, token
from tests.gateway.support import WRITER, bearer

CHROMIUM = os.environ.get("CONSOLE_CHROMIUM", "/usr/bin/chromium")
AXE = Path(__file__).with_name("axe") / "axe.min.js"
SCREENSHOTS = os.environ.get("CONSOLE_SCREENSHOTS")
RESEARCH = f"{DEMO}.run-research-7"   # the PII-egress run: its policy breaks at step 2
SUPPORT = f"{DEMO}.run-support-103"   # the run a budget stopped

def _read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def _chromium_present() -> bool:
    return bool(shutil.which(CHROMIUM)) or Path(CHROMIUM).exists()


def _no_browser(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)", pytrace=False)
    pytest.skip(f"{reason}: `apt-get install -y chromium` (and the venv's playwright) to run the console's browser tests")


@pytest.fixture(scope="session")
async def browser():
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        _no_browser("the playwright package is not installed")
    if not _chromium_present():
        _no_browser(f"no chromium at {CHROMIUM}")
    async with async_playwright() as playwright:
        # Generous limits: the machine the suite runs on may be shared and loaded.
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], timeout=600_000)
        yield chromium
        await chromium.close()


class Console:
    """One signed-in browser tab, collecting page errors and CSP violations as it goes."""

    def __init__(self, page, base: str) -> None:
        self.page, self.base, self.problems, self.token = page, base, [], ""
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console: {message.text}")

    async def open(self, fragment: str, ready: str = "main h1") -> None:
        """The console at ``fragment`` ("#/…"), in this document (the way a link moves it)."""
        await self.settled(self.page.evaluate(
            "h => { if (location.hash === h) window.dispatchEvent(new HashChangeEvent('hashchange'));"
            " else location.hash = h; }", fragment))
        await self.page.wait_for_selector(ready)

    async def settled(self, action) -> None:
        """Awaits ``action`` (a click, a navigation), then the page it leads to: the console marks
        each finished navigation on <main data-view>. (No wait_for_function: the page's CSP
        forbids the eval it needs.)"""
        before = await self.page.get_attribute("#main", "data-view")
        await action
        await self.page.wait_for_selector(f"#main[data-view]:not([data-view='{before}'])")

    async def text(self, selector: str = "main") -> str:
        return await self.page.inner_text(selector)

    async def shot(self, name: str) -> None:
        if SCREENSHOTS:
            await self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)

    async def axe(self) -> list[dict]:
        """axe-core's serious and critical violations on the page as it is now. Injected through
        the DevTools protocol (evaluate), which the page's CSP does not govern — the page's own
        scripts stay under it."""
        await self.page.evaluate(_read(AXE).decode())
        result = await self.page.evaluate(
            "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'best-practice']})")
        assert result["passes"], "axe-core checked nothing"
        return [{"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
                for v in result["violations"] if v["impact"] in ("serious", "critical")]


async def _console(browser, served: str, tenant: str = DEMO, **context):
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, **context)
    ctx.set_default_timeout(120_000)
    page = await ctx.new_page()
    console = Console(page, served)
    console.token = token(tenant)
    await page.goto(f"{served}/#token={console.token}")
    await page.wait_for_selector("#main[data-view]")
    return ctx, console


@pytest.fixture
async def tab(browser, served, demo):
    ctx, console = await _console(browser, served)
    yield console
    await ctx.close()
    assert not console.problems, console.problems  # no script error, no CSP violation, no failed load


async def _api(served: str, path: str, tenant: str = DEMO, **params) -> dict:
    async with httpx.AsyncClient(base_url=served, headers=bearer(tenant)) as http:
        reply = await http.get(path, params=params)
        reply.raise_for_status()
        return reply.json()


# --- signing in -----------------------------------------------------------------------


async def test_the_printed_link_signs_in_and_the_token_leaves_the_url(browser, served, demo):
    ctx, console = await _console(browser, served)
    page = console.page
    assert page.url == f"{served}/#/overview"  # the #token=… fragment is gone (replaceState: not in history either)
    assert await page.evaluate("sessionStorage.getItem('aos.token')") == console.token
    assert "token" not in await page.evaluate("window.location.href + document.referrer")
    await page.click("#signout")
    await page.wait_for_selector("h1:has-text('Sign in')")
    assert await page.evaluate("sessionStorage.getItem('aos.token')") is None
    # The sign-in page takes a token typed in.
    await page.fill("#token", token(DEMO))
    await page.keyboard.press("Enter")
    await page.wait_for_selector("h1:has-text('Overview')")
    await ctx.close()
    assert not console.problems, console.problems


async def test_a_refused_token_asks_to_sign_in_again(browser, served, demo):
    ctx = await browser.new_context()
    ctx.set_default_timeout(120_000)
    page = await ctx.new_page()
    await page.goto(f"{served}/#token=not-a-jwt")
    await page.wait_for_selector("h1:has-text('Sign in')")
    assert "sign in again" in await page.inner_text("main")
    await ctx.close()


# --- what needs my attention ------------------------------------------------------------


async def test_overview_says_what_needs_attention_and_links_the_evidence(tab, served):
    highlights = await _api(served, "/api/v1/runtime/overview/highlights")
    costs = await _api(served, "/api/v1/runtime/overview/costs")
    decisions = await _api(served, "/api/v1/runtime/overview/decisions", page_size=50)
    until = "2026-11-01T00:00:00Z"  # the demo's day (BASE): its budget went NEAR the day before
    history = await _api(served, "/api/v1/runtime/overview/costs/history", days=14, until=until)
    await tab.open(f"#/overview?costs_until={until}")
    await tab.page.wait_for_selector("#cost-chart figure, #cost-chart .warn")
    pulse = await tab.text(".pulse")
    assert highlights["pulse"]["status"].removeprefix("PULSE_STATUS_") in pulse
    # The reason is the server's, shown as it is (not composed here).
    assert highlights["pulse"]["reason"] and await tab.text("#pulse-reason") == highlights["pulse"]["reason"]
    counts = await tab.text(".counts")
    assert len(highlights["domain_counts"]) == 3
    for domain in highlights["domain_counts"]:
        assert domain["domain"] in counts and str(domain["total"]) in counts
    budgets = await tab.page.locator(".budget").all_inner_texts()
    assert len(budgets) == len(costs["limits"])
    word = {"BUDGET_STATUS_OK": "OK", "BUDGET_STATUS_NEAR_THRESHOLD": "NEAR", "BUDGET_STATUS_BREACHED": "BREACHED"}
    for limit, text in zip(costs["limits"], budgets, strict=True):
        assert limit["name"] in text and word[limit["status"]] in text
        assert limit["reset_period"].removeprefix("RESET_PERIOD_") in text
    assert await tab.page.locator(".budget [role=meter]").count() == len(costs["limits"])
    # Cost over time per budget scope against its budget: a chart per budget, drawn (uPlot's
    # canvas and legend), with the days the server marks NEAR or BREACHED listed as such.
    assert history["budgets"]
    word = {"BUDGET_STATUS_NEAR_THRESHOLD": "NEAR", "BUDGET_STATUS_BREACHED": "BREACHED"}
    for budget in history["budgets"]:
        box = tab.page.locator(f".budget-history[data-limit-id='{budget['budget']['limit_id']}']")
        await box.locator("canvas").first.wait_for()
        caption = await box.locator("figcaption").inner_text()
        assert budget["budget"]["reset_period"].removeprefix("RESET_PERIOD_") in caption
        assert f"{int(budget['budget']['max_value']['amount_cents']) / 100:.2f} USD" in caption
        legend = await box.locator(".u-legend").inner_text()
        assert all(name in legend for name in ("used in the window", "budget", "NEAR", "BREACHED"))
        marked = [f"{d['day'][:10]} {word[d['status']]}" for d in budget["days"] if d["status"] in word]
        shown = [" ".join(t.split()[:2]) for t in await box.locator(".budget-marks li").all_inner_texts()]
        assert shown == marked
    assert any(d["status"] == "BUDGET_STATUS_NEAR_THRESHOLD" for b in history["budgets"] for d in b["days"])
    rows = tab.page.locator("#decisions tbody tr")
    assert await rows.count() == len(decisions["decisions"]) > 0
    for i, decision in enumerate(decisions["decisions"]):
        row = await rows.nth(i).inner_text()
        assert decision["summary"] in row and decision["priority"].removeprefix("DECISION_PRIORITY_") in row
    await tab.shot("overview")
    assert await tab.axe() == []
    # The decisions queue pages both ways.
    await tab.open("#/overview?decisions_page_size=1")
    walked = [await tab.text("#decisions tbody tr td:nth-child(2)")]
    await tab.settled(tab.page.locator("#decisions").get_by_role("link", name="Next page").click())
    walked.append(await tab.text("#decisions tbody tr td:nth-child(2)"))
    await tab.settled(tab.page.locator("#decisions").get_by_role("link", name="Previous page").click())
    assert walked == [d["summary"] for d in decisions["decisions"][:2]]
    assert await tab.text("#decisions tbody tr td:nth-child(2)") == walked[0]
    await tab.open("#/overview")
    # Each decision links to its evidence: the incident's audit trail, filtered.
    incident = next(d for d in decisions["decisions"] if d["entity_type"] == "AUDIT_ENTITY_TYPE_INCIDENT")
    index = decisions["decisions"].index(incident)
    await tab.settled(rows.nth(index).get_by_role("link", name="incident audit trail").click())
    assert await tab.text("h1") == "Audit ledger"
    assert await tab.page.input_value("#f-entity_type") == "AUDIT_ENTITY_TYPE_INCIDENT"
    entities = await tab.page.locator("main tbody tr td:nth-child(3)").all_inner_texts()
    assert entities and all(e.startswith("INCIDENT") for e in entities)


# --- what did this run do, where did it break policy ---------------------------------------


async def test_runs_filter_and_keyset_paging(tab, served):
    everything = await _api(served, "/api/v1/logs/llm-runs", page_size=1000)
    all_ids = [r["run_id"] for r in everything["runs"]]
    assert len(all_ids) >= 2
    await tab.open("#/runs?page_size=1")
    seen = []
    while True:
        seen += await tab.page.locator("main tbody th a").all_inner_texts()
        more = tab.page.get_by_role("link", name="Next page")
        if not await more.count():
            break
        await tab.settled(more.click())
    assert seen == all_ids  # every run once, newest first, across the pages
    back = []  # and back again, page by page (the console keeps the way back; the API pages forward)
    while await tab.page.get_by_role("link", name="Previous page").count():
        await tab.settled(tab.page.get_by_role("link", name="Previous page").click())
        back += await tab.page.locator("main tbody th a").all_inner_texts()
    assert back == list(reversed(all_ids))[1:]  # ending on the first page, which has no way back
    await tab.settled(tab.page.get_by_role("link", name="Next page").click())
    await tab.settled(tab.page.get_by_role("link", name="First page").click())
    assert await tab.page.locator("main tbody th a").all_inner_texts() == all_ids[:1]
    # A filter: runs with a policy violation.
    await tab.page.select_option("#f-has_violation", "true")
    await tab.settled(tab.page.click("main form.filters button[type=submit]"))
    assert "has_violation=true" in tab.page.url
    violating = [r["run_id"] for r in everything["runs"] if r["has_violation"]]
    shown = await tab.page.locator("main tbody th a").all_inner_texts()
    assert shown == violating and shown  # (the filter form starts again at the default page size)
    await tab.shot("runs")
    assert await tab.axe() == []


async def test_the_run_page_shows_where_it_broke_policy(tab, served):
    trace = await _api(served, f"/api/v1/logs/llm-runs/{RESEARCH}/trace")
    step = trace["trace"]["violation_step_index"]
    await tab.open(f"#/runs/{RESEARCH}/envelope")
    assert "policy violation pol-pii-egress" in await tab.text(".lede")
    # Keyboard only: Tab to the O2 tab, Enter.
    for _ in range(40):
        await tab.page.keyboard.press("Tab")
        if await tab.page.evaluate("document.activeElement.textContent") == "O2 Trace":
            break
    else:
        pytest.fail("the O2 tab cannot be reached with the keyboard")
    await tab.page.keyboard.press("Enter")
    await tab.page.wait_for_selector(".timeline")
    assert await tab.page.get_attribute(".tabs a[aria-current=page]", "href") == f"#/runs/{RESEARCH}/trace"
    marked = tab.page.locator(".step-violation")
    assert await marked.count() == 1
    assert f"#{step}" in await marked.inner_text() and "VIOLATION" in await marked.inner_text()
    assert trace["trace"]["violation_reason"] in await tab.text(".callout")
    hashes = await tab.page.locator(".timeline .hash").all_inner_texts()
    assert hashes == [s["content_hash"] for s in trace["steps"]]
    await tab.page.click("#goto-violation")
    assert await tab.page.evaluate("document.activeElement.id") == f"step-{step}"
    await tab.shot("run-trace")
    assert await tab.axe() == []

    governance = await _api(served, f"/api/v1/logs/llm-runs/{RESEARCH}/governance")
    await tab.page.get_by_role("link", name="O3 Governance").click()
    await tab.page.wait_for_selector("h2:has-text('O3 Governance')")
    text = await tab.text(".tabpanel")
    for entry in governance["audit_entries"]:
        assert entry["entity_id"] in text
    assert len(governance["policy_steps"]) >= 1 and "VIOLATION" in text
    await tab.shot("run-governance")

    replay = await _api(served, f"/api/v1/logs/llm-runs/{RESEARCH}/replay")
    await tab.page.get_by_role("link", name="O4 Replay").click()
    await tab.page.wait_for_selector("h2:has-text('O4 Replay')")
    assert await tab.page.locator(".tabpanel tbody tr").count() == len(replay["replay"]["events"])
    await tab.shot("run-replay")
    assert await tab.axe() == []


async def test_another_tenants_run_is_the_same_not_found_as_a_missing_one(tab):
    await tab.open(f"#/runs/{ACME}.run-support-103/envelope")
    foreign = await tab.text()
    await tab.open(f"#/runs/{DEMO}.run-that-never-was/envelope")
    missing = await tab.text()
    assert foreign == missing and "Not found" in foreign
    tab.problems = [p for p in tab.problems if "404" not in p]  # the API's 404s, as expected


async def test_system_records_and_their_depths(tab, served):
    window = {"created_after": "2026-10-01T00:00:00Z", "created_before": "2026-12-01T00:00:00Z"}  # the demo's (BASE)
    records = await _api(served, "/api/v1/logs/system", page_size=20, **window)
    await tab.open("#/system?created_after=2026-10-01T00:00:00Z&created_before=2026-12-01T00:00:00Z")
    assert await tab.page.locator("main table").first.locator("tbody tr").count() == len(records["records"]) > 0
    attribution = await _api(served, "/api/v1/logs/system/audit", page_size=50, **window)
    assert await tab.page.locator("main table").nth(1).locator("tbody tr").count() == len(attribution["rows"]) > 0
    await tab.shot("system")
    telemetry = await _api(served, f"/api/v1/logs/system/{SUPPORT}/telemetry")
    await tab.open(f"#/system/{SUPPORT}/telemetry", ready="h2:has-text('O2 Telemetry')")
    text = await tab.text(".tabpanel")
    assert telemetry["status"] == "TELEMETRY_STATUS_NOT_COLLECTED" and "NOT_COLLECTED" in text
    assert telemetry["reason"] in text
    await tab.shot("system-telemetry")
    assert await tab.axe() == []


async def test_the_audit_ledger_filters_and_diffs_an_entry(tab, served):
    approved = await _api(served, "/api/v1/logs/audit", event_type="AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED")
    entry = approved["entries"][0]
    await tab.open("#/audit")
    await tab.page.select_option("#f-event_type", "AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED")
    await tab.settled(tab.page.click("main form.filters button[type=submit]"))
    assert "event_type=AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED" in tab.page.url
    await tab.shot("audit")
    assert await tab.page.locator("main tbody th a").all_inner_texts() == [str(e["seq"]) for e in approved["entries"]]
    # The ledger pages both ways too.
    paged = await _api(served, "/api/v1/logs/audit", page_size=2)
    await tab.open("#/audit?page_size=2")
    await tab.settled(tab.page.get_by_role("link", name="Next page").click())
    await tab.settled(tab.page.get_by_role("link", name="Previous page").click())
    assert await tab.page.locator("main tbody th a").all_inner_texts() == [str(e["seq"]) for e in paged["entries"]]
    await tab.open("#/audit?event_type=AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED")
    await tab.page.locator("main tbody th a").first.click()
    await tab.page.wait_for_selector("h1:has-text('Ledger entry')")
    detail = await _api(served, f"/api/v1/logs/audit/{entry['id']}")
    changed = {k for k in set(detail["before_state"]) | set(detail["after_state"])
               if detail["before_state"].get(k) != detail["after_state"].get(k)}
    rows = {(await r.locator("th").inner_text()): (await r.get_attribute("class"))
            for r in await tab.page.locator("main tbody tr").all()}
    assert changed and {k for k, cls in rows.items() if cls != "diff-same"} == changed
    assert entry["chain_hash"] in await tab.text()
    await tab.shot("audit-entry")
    assert await tab.axe() == []


# --- can I prove it ----------------------------------------------------------------------


async def test_the_checkpoint_signature_and_an_inclusion_proof_are_checked_in_the_browser(tab, served):
    """The page checks the latest checkpoint's C2SP note signature (WebCrypto Ed25519) against the
    key the person pins, and holds the inclusion proof against that verified checkpoint only; a
    flipped byte in the signature, a wrong pinned key or a forged proof each show as failed."""
    report = await _api(served, "/api/v1/logs/audit/integrity")
    log_cp = (await _api(served, "/api/v1/logs/audit/checkpoint"))["log_checkpoint"]
    vkey = log_cp["log_verifier_key"]
    verifier = note.parse_verifier_key(vkey)  # the reference verifier agrees the note is signed
    assert note.open_note(log_cp["signed_note"].encode(), [verifier])
    await tab.page.evaluate("localStorage.removeItem('aos.pinned-log-key')")
    await tab.open("#/integrity?seq=2", ready="#proof-verdict")
    assert report["status"].removeprefix("INTEGRITY_STATUS_") in await tab.text()
    # Nothing pinned: the signature is not checked, so the proof is not held against the checkpoint.
    assert (await tab.text("#note-verdict")).startswith("NOT CHECKED")
    assert (await tab.text("#proof-verdict")).startswith("CONSISTENT with the proof's own root only")
    await tab.page.click("#use-served-key")
    assert await tab.page.input_value("#pin-key") == vkey
    await tab.page.click("#verify-note")
    await tab.page.wait_for_selector("#note-verdict.ok, #note-verdict.bad")
    assert await tab.page.locator("#note-verdict.ok").count(), (await tab.text("#note-result"), log_cp["signed_note"])
    assert (await tab.text("#note-verdict")).startswith(f"VALID — signed by {log_cp['origin']}, tree size {log_cp['tree_size']}")
    await tab.page.click("#prove")
    await tab.page.wait_for_selector("#proof-verdict.ok")
    verdict = await tab.text("#proof-result")
    assert verdict.startswith("VERIFIED in this browser against the signed checkpoint") and "fail" not in verdict
    assert "root = the signed checkpoint's root" in verdict
    await tab.page.wait_for_selector("#ledger-growth figure")
    await tab.shot("integrity")
    assert await tab.axe() == []

    # A key of the same name that did not sign: INVALID.
    other = note.NoteVerifier.ed25519(log_cp["origin"], Ed25519PrivateKey.generate().public_key()).vkey()
    await tab.page.fill("#pin-key", other)
    await tab.page.click("#verify-note")
    await tab.page.wait_for_selector("#note-verdict.bad")
    assert (await tab.text("#note-verdict")).startswith("INVALID")

    # A key whose base64 holds '+' (the key string is cut at its first two '+' only): the same
    # checkpoint signed with it, served in place of the log's, verifies against it.
    signer = next(k for k in iter(Ed25519PrivateKey.generate, None)
                  if "+" in note.verifier_key(log_cp["origin"], k.public_key()).split("+", 2)[2])
    body = log_cp["signed_note"].rpartition("\n\n")[0] + "\n"
    resigned = note.sign_note(body.encode(), log_cp["origin"], signer).decode()

    async def resign(route):
        reply = await route.fetch()
        answer = await reply.json()
        answer["log_checkpoint"]["signed_note"] = resigned
        await route.fulfill(response=reply, body=json.dumps(answer))

    await tab.page.route("**/api/v1/logs/audit/checkpoint*", resign)
    await tab.page.evaluate("k => localStorage.setItem('aos.pinned-log-key', k)",
                            note.verifier_key(log_cp["origin"], signer.public_key()))
    await tab.open("#/integrity", ready="#note-verdict")
    assert (await tab.text("#note-verdict")).startswith("VALID"), await tab.text("#note-result")
    await tab.page.unroute("**/api/v1/logs/audit/checkpoint*")

    async def flip_signature(route):  # one flipped byte in the log's Ed25519 signature
        reply = await route.fetch()
        body = await reply.json()
        text, _, signatures = body["log_checkpoint"]["signed_note"].rpartition("\n\n")
        first, *rest = signatures.split("\n")
        name, sig = first[2:].split(" ")
        raw = bytearray(base64.b64decode(sig))
        raw[10] ^= 1
        body["log_checkpoint"]["signed_note"] = "\n\n".join(
            [text, "\n".join([f"— {name} {base64.b64encode(bytes(raw)).decode()}", *rest])])
        await route.fulfill(response=reply, body=json.dumps(body))

    await tab.page.route("**/api/v1/logs/audit/checkpoint*", flip_signature)
    await tab.page.evaluate("k => localStorage.setItem('aos.pinned-log-key', k)", vkey)
    await tab.open("#/integrity?seq=2", ready="#proof-verdict")  # the pinned key, remembered, is used at once
    assert (await tab.text("#note-verdict")).startswith("INVALID")
    assert "fail Ed25519 signature by" in await tab.text("#note-result")
    assert (await tab.text("#proof-verdict")).startswith("CONSISTENT with the proof's own root only")
    await tab.page.unroute("**/api/v1/logs/audit/checkpoint*")

    async def forge(route):  # one flipped bit in the audit path must fail the browser's check
        reply = await route.fetch()
        proof = await reply.json()
        first = bytearray(base64.b64decode(proof["audit_path"][0]))
        first[0] ^= 1
        proof["audit_path"][0] = base64.b64encode(bytes(first)).decode()
        await route.fulfill(response=reply, body=json.dumps(proof))

    await tab.open("#/integrity", ready="#note-verdict.ok")
    await tab.page.route("**/api/v1/logs/audit/proofs/inclusion*", forge)
    await tab.page.click("#prove")
    await tab.page.wait_for_selector("#proof-verdict:has-text('NOT VERIFIED')")
    assert "fail" in await tab.text("#proof-result")


async def test_an_export_is_created_downloaded_and_verified(browser, served, writer_data):
    """In the writer tenant (exports are writes): from a run's O5 tab to the auditor's command."""
    ctx, tab = await _console(browser, served, WRITER)
    run = f"{WRITER}.run-support-103"
    await tab.open(f"#/runs/{run}/exports", ready="#x-create")
    await tab.page.select_option("#x-format", "EXPORT_FORMAT_ZIP")
    await tab.page.click("#x-create")
    await tab.page.wait_for_selector("#download", timeout=120_000)
    export_id = tab.page.url.rsplit("/", 1)[-1]
    export = (await _api(served, f"/api/v1/logs/exports/{export_id}", WRITER))["export"]
    async with tab.page.expect_download() as download:
        await tab.page.click("#download")
    saved = await (await download.value).path()
    assert hashlib.sha256(_read(saved)).hexdigest() == export["checksum"]
    await tab.page.click("#verify")
    await tab.page.wait_for_selector("#verify-verdict", timeout=120_000)
    assert (await tab.text("#verify-verdict")).startswith("VALID")
    assert await tab.page.locator("#verify-result tbody tr").count() >= 3
    command = await tab.text("#offline-command")
    assert command.startswith("python -m aos_recording.verify_export ") and export["filename"] in command
    async with tab.page.expect_download() as envelope:
        await tab.page.click("#save-envelope")
    assert _read(await (await envelope.value).path()).decode() == export["dsse_envelope"]
    await tab.shot("export")
    assert await tab.axe() == []
    await tab.open("#/exports", ready="main table")
    assert export_id in await tab.text("main table")
    await tab.shot("exports")
    # The run's O5 tab now lists it.
    await tab.open(f"#/runs/{run}/exports", ready="#x-create")
    assert export_id in await tab.text(".tabpanel")
    # An incident's export, from the link the overview's decisions give.
    incident = f"{WRITER}.inc-pii-7"
    await tab.open(f"#/exports?incident_id={incident}", ready="#x-create")
    await tab.page.select_option("#x-format", "EXPORT_FORMAT_JSON")
    await tab.settled(tab.page.click("#x-create"))
    assert f"INCIDENT {incident}" in await tab.text("dl.fields")
    await ctx.close()
    assert not tab.problems, tab.problems


# --- the page itself ---------------------------------------------------------------------


async def test_every_console_answer_has_a_strict_csp(served):
    async with httpx.AsyncClient(base_url=served) as http:
        for path in ("/", "/docs", "/console/app.js", "/console/vendor/uplot/uPlot.iife.min.js"):
            reply = await http.get(path)
            assert reply.status_code == 200, path
            csp = reply.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "script-src 'self'" in csp
            assert reply.headers["x-content-type-options"] == "nosniff"


async def test_the_api_docs_render_the_protos_comments(tab, served):
    document = await _api(served, "/openapi.json")
    summary = document["paths"]["/api/v1/logs/llm-runs"]["get"]["summary"]
    await tab.page.goto(f"{served}/docs")
    await tab.page.wait_for_selector(".opblock-tag")
    assert summary in await tab.page.inner_text("#swagger-ui")
    await tab.shot("docs")


# --- retention policies and legal holds ---------------------------------------------------

KEEPER = "tenant-console-retention"  # a tenant of its own: the page writes policies and holds


@pytest.fixture(scope="module")
def keeper(database_url) -> str:
    from sqlalchemy import text

    from aos_recording.writers import Producer
    from tests.logins import login_url

    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(KEEPER) as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, :t) ON CONFLICT DO NOTHING"), {"t": KEEPER})
    finally:
        producer.close()
    return KEEPER


async def _signed_in(browser, served: str, bearer_token: str):
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(120_000)
    page = await ctx.new_page()
    console = Console(page, served)
    console.token = bearer_token
    await page.goto(f"{served}/#token={bearer_token}")
    await page.wait_for_selector("#main[data-view]")
    return ctx, console


async def test_retention_policies_and_holds_are_set_placed_and_released(browser, served, keeper):
    """A retention.admin sees the tenant's policies and holds as the API answers them, sets a
    policy, places and releases a hold, and reads the server's refusal when a value is wrong."""
    ctx, tab = await _signed_in(browser, served, token(keeper))
    policies = (await _api(served, "/api/v1/logs/retention/policies", keeper))["policies"]
    await tab.open("#/retention", ready="#policy-form")
    rows = tab.page.locator("main section.card").first.locator("tbody tr")
    assert await rows.count() == len(policies) == 7
    text = await tab.text("main section.card >> nth=0")
    for p in policies:
        assert p["record_type"].removeprefix("RETENTION_RECORD_TYPE_") in text
    assert "No active legal holds." in await tab.text()
    assert await tab.axe() == []
    # A policy, set through the form: the page then shows what the API answers.
    await tab.page.select_option("#p-record-type", "RETENTION_RECORD_TYPE_SYSTEM_RECORDS")
    await tab.page.select_option("#p-level", "SYSTEM_SEVERITY_WARNING")
    await tab.page.fill("#p-days", "45")
    await tab.page.fill("#p-tags", "ops, eu-data")
    await tab.settled(tab.page.click("#p-set"))
    assert await tab.text("#retention-flash") == "Policy set: SYSTEM_RECORDS WARNING kept 45 days (STANDARD)."
    after = (await _api(served, "/api/v1/logs/retention/policies", keeper))["policies"]
    warning = next(p for p in after if p.get("level") == "SYSTEM_SEVERITY_WARNING")
    assert warning["retention_days"] == 45 and not warning.get("is_default") and warning["compliance_tags"] == ["ops", "eu-data"]
    row = tab.page.locator("main tbody tr", has_text="WARNING").first
    assert "45 days" in await row.inner_text() and "ops, eu-data" in await row.inner_text()
    # The same again changes nothing, and says so.
    await tab.page.select_option("#p-record-type", "RETENTION_RECORD_TYPE_SYSTEM_RECORDS")
    await tab.page.select_option("#p-level", "SYSTEM_SEVERITY_WARNING")
    await tab.page.fill("#p-days", "45")
    await tab.page.fill("#p-tags", "ops, eu-data")
    await tab.settled(tab.page.click("#p-set"))
    assert (await tab.text("#retention-flash")).startswith("Nothing changed: SYSTEM_RECORDS WARNING")
    # Below the ledger's minimum: the server's refusal, with the field it names, and nothing set.
    await tab.page.select_option("#p-record-type", "RETENTION_RECORD_TYPE_AUDIT_LEDGER")
    assert await tab.page.is_disabled("#p-level")
    await tab.page.fill("#p-days", "30")
    await tab.page.click("#p-set")
    alert = await tab.page.wait_for_selector("#policy-result-error[role=alert]")
    said = await alert.inner_text()
    assert said.startswith("Policy not set:") and "retention_days" in said, said
    assert await tab.page.is_enabled("#p-set")  # corrected and sent again from the same form
    ledger = next(p for p in (await _api(served, "/api/v1/logs/retention/policies", keeper))["policies"]
                  if p["record_type"] == "RETENTION_RECORD_TYPE_AUDIT_LEDGER")
    assert ledger.get("is_default") and ledger["retention_days"] == 365
    assert await tab.axe() == []
    await tab.shot("retention-error")
    # A hold placed on a run, listed, then released with a reason.
    await tab.page.select_option("#h-scope", "LEGAL_HOLD_SCOPE_RUN")
    await tab.page.fill("#h-target", f"{keeper}.run-7")
    await tab.page.fill("#h-reason", "litigation 7")
    await tab.settled(tab.page.click("#h-place"))
    holds = (await _api(served, "/api/v1/logs/retention/holds", keeper))["holds"]
    assert len(holds) == 1 and holds[0]["active"] and holds[0]["reason"] == "litigation 7"
    assert holds[0]["hold_id"] in await tab.text("#retention-flash")
    row = tab.page.locator("main tbody tr", has_text="litigation 7")
    assert f"{keeper}.run-7" in await row.inner_text() and "active" in await row.inner_text()
    await tab.shot("retention")
    # A hold the server refuses (a run hold names its run): its reason shown, nothing placed.
    await tab.page.select_option("#h-scope", "LEGAL_HOLD_SCOPE_RUN")
    await tab.page.fill("#h-target", "")
    await tab.page.fill("#h-reason", "no target")
    await tab.page.click("#h-place")
    refused = await (await tab.page.wait_for_selector("#hold-result-error[role=alert]")).inner_text()
    assert refused.startswith("Hold not placed:") and "target_id" in refused, refused
    assert len((await _api(served, "/api/v1/logs/retention/holds", keeper))["holds"]) == 1
    release = tab.page.locator(f"form.release[data-hold-id='{holds[0]['hold_id']}']")
    await release.locator("input").fill("settled out of court")
    await tab.settled(release.locator("button").click())
    assert (await tab.text("#retention-flash")).startswith("Hold released")
    assert "No active legal holds." in await tab.text()
    gone = (await _api(served, "/api/v1/logs/retention/holds", keeper, include_released="true"))["holds"]
    assert not gone[0].get("active") and gone[0]["release_reason"] == "settled out of court"
    await tab.settled(tab.page.get_by_role("link", name="Show released holds too").click())
    row = tab.page.locator("main tbody tr", has_text="litigation 7")
    assert "released" in await row.inner_text() and "settled out of court" in await row.inner_text()
    assert await tab.page.locator("form.release").count() == 0
    assert await tab.axe() == []
    await ctx.close()
    # The browser logs each refused request; the two refusals above, and nothing else.
    refusals = ["console: Failed to load resource: the server responded with a status of 400 (Bad Request)"] * 2
    assert tab.problems == refusals, tab.problems


async def test_retention_is_read_only_without_retention_admin(browser, served, keeper):
    # What a reader of the console has (the overview it lands on included), less retention.admin.
    reader = token(keeper, scopes=("overview.read", "logs.read", "exports.read", "retention.read"))
    ctx, tab = await _signed_in(browser, served, reader)
    await tab.open("#/retention", ready="#retention-readonly")
    assert await tab.page.locator("#policy-form, #hold-form, form.release").count() == 0
    policies = (await _api(served, "/api/v1/logs/retention/policies", keeper))["policies"]
    assert await tab.page.locator("main section.card").first.locator("tbody tr").count() == len(policies)
    assert await tab.axe() == []
    await ctx.close()
    assert not tab.problems, tab.problems
    # Without retention.read the page says why it shows nothing.
    ctx, tab = await _signed_in(browser, served, token(keeper, scopes=("logs.read",)))
    await tab.open("#/retention")
    said = await tab.text()
    assert "Something went wrong" in said and "retention.read" in said, said
    await ctx.close()


async def test_the_lists_search_and_sort(tab, served):
    """The list pages take the lists' search, sort and order: the table is what the API answers
    for the same query, and its caption says the order."""
    runs = await _api(served, "/api/v1/logs/llm-runs", page_size=20, sort="LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS")
    await tab.open("#/runs")
    await tab.page.select_option("#f-sort", "LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS")
    await tab.settled(tab.page.click("main form.filters button[type=submit]"))
    assert "sort=LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS" in tab.page.url
    assert await tab.page.locator("main tbody th a").all_inner_texts() == [r["run_id"] for r in runs["runs"]]
    assert "by total_cost_cents descending, then newest first" in await tab.text("main caption")
    found = await _api(served, "/api/v1/logs/audit", page_size=20, search="refunds", order="SORT_ORDER_ASCENDING")
    await tab.open("#/audit")
    await tab.page.fill("#f-search", "refunds")
    await tab.page.select_option("#f-order", "SORT_ORDER_ASCENDING")
    await tab.settled(tab.page.click("main form.filters button[type=submit]"))
    assert await tab.page.locator("main tbody th a").all_inner_texts() == [str(e["seq"]) for e in found["entries"]]
    assert found["entries"] and "matching “refunds”, oldest first" in await tab.text("main caption")
    # The export form takes filters, not a search: the page says so instead of offering it.
    assert await tab.page.locator("#x-create").count() == 0 and await tab.page.locator("#export-needs-filters").count() == 1
    # Sorted by actor (migration 0029): the sort select offers it, the table is the API's order.
    by_actor = await _api(served, "/api/v1/logs/audit", page_size=20, sort="AUDIT_SORT_FIELD_ACTOR",
                          order="SORT_ORDER_ASCENDING")
    await tab.open("#/audit")
    await tab.page.select_option("#f-sort", "AUDIT_SORT_FIELD_ACTOR")
    await tab.page.select_option("#f-order", "SORT_ORDER_ASCENDING")
    await tab.settled(tab.page.click("main form.filters button[type=submit]"))
    assert await tab.page.locator("main tbody th a").all_inner_texts() == [str(e["seq"]) for e in by_actor["entries"]]
    assert by_actor["entries"] and "by actor ascending, then oldest first" in await tab.text("main caption")
    severe = await _api(served, "/api/v1/logs/system", page_size=20, sort="SYSTEM_RECORD_SORT_FIELD_SEVERITY")
    await tab.open("#/system?sort=SYSTEM_RECORD_SORT_FIELD_SEVERITY")
    cells = await tab.page.locator("main table").first.locator("tbody tr td:nth-child(4)").all_inner_texts()
    assert cells == [r["severity"].removeprefix("SYSTEM_SEVERITY_") for r in severe["records"]] and cells
    assert await tab.axe() == []


# --- erasure state (docs/ERASURE.md §3, §3a) -----------------------------------------------

ERASED_TENANT = "tenant-console-erased"
ERASED_RUN = f"{ERASED_TENANT}.run-erased"


@pytest.fixture(scope="module")
def erasable(database_url) -> str:
    """A run whose first step and one correlated audit entry are hash format 2 under a data subject
    (their payloads erasable), a v1 policy step beside them, written as a producer would."""
    from datetime import timedelta

    from sqlalchemy import text

    from aos_recording.writers import AuditLedgerWriter, LlmRunRecordWriter, Producer, TraceRecorder
    from tests.e2e.support import BASE
    from tests.logins import login_url

    subject = "subj-console-erased"
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(ERASED_TENANT) as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, :t) ON CONFLICT DO NOTHING"),
                         {"t": ERASED_TENANT})
            LlmRunRecordWriter(conn).write(tenant_id=ERASED_TENANT, run_id=ERASED_RUN, provider="openai", model="gpt",
                                           execution_status="succeeded", started_at=BASE, created_at=BASE)
            traces = TraceRecorder(conn)
            trace = traces.create_trace(tenant_id=ERASED_TENANT, run_id=ERASED_RUN, started_at=BASE)
            traces.add_step(tenant_id=ERASED_TENANT, trace_id=trace, step_index=0, step_type="llm_call",
                            timestamp=BASE, input_data={"prompt": "Console Subject lives on Birch Lane"},
                            output_data={"text": "noted"}, data_subject=subject)
            traces.add_step(tenant_id=ERASED_TENANT, trace_id=trace, step_index=1, step_type="policy_check",
                            timestamp=BASE + timedelta(seconds=1), input_data={"rule": "pii"})
            AuditLedgerWriter(conn).append(tenant_id=ERASED_TENANT, event_type="LimitUpdated", entity_type="LIMIT",
                                           entity_id=f"{ERASED_TENANT}.lim", actor_type="HUMAN", actor_id="user-ops",
                                           action_reason="raised for Console Subject", correlation_id=ERASED_RUN,
                                           created_at=BASE + timedelta(seconds=2), data_subject=subject)
    finally:
        producer.close()
    return subject


async def test_erased_content_is_shown_as_erased(browser, served, erasable):
    """After an erasure: the run's trace and governance show each erased payload as ERASED with its
    erasure id (never an empty value as content), and an export made before it says its content
    was erased, its Download disabled — what the API answers, in the page."""
    async with httpx.AsyncClient(base_url=served, headers=bearer(ERASED_TENANT)) as http:
        created = await http.post("/api/v1/logs/exports", json={
            "run_id": ERASED_RUN, "bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"})
        assert created.status_code == 200, created.text
        export_id = created.json()["export"]["export_id"]
        erased = await http.post("/api/v1/ingest/erasures", json={"subjectId": erasable, "reason": "DSR-console"},
                                 headers={"Authorization": f"Bearer {token(ERASED_TENANT, scopes=('evidence.erase',))}"})
        assert erased.status_code == 200, erased.text
    erasure = erased.json()["erasure_id"]
    assert erased.json()["exports_erased"] == [export_id]
    ctx, tab = await _console(browser, served, ERASED_TENANT)
    # The trace: step 0's input and output are ERASED by that erasure; step 1 (format 1) shows its input.
    trace = await _api(served, f"/api/v1/logs/llm-runs/{ERASED_RUN}/trace", ERASED_TENANT)
    gone = {p["field"] for p in trace["steps"][0]["payloads"] if p["state"] == "PAYLOAD_STATE_ERASED"}
    assert gone == {"input_data", "output_data"}
    await tab.open(f"#/runs/{ERASED_RUN}/trace", ready="ol.timeline")
    step0 = tab.page.locator("#step-0")
    marks = step0.locator(".payload-erased")
    assert await marks.count() == 2
    assert {await marks.nth(i).get_attribute("data-erasure") for i in range(2)} == {erasure}
    assert "ERASED" in await step0.inner_text() and erasure in await step0.inner_text()
    assert "Birch Lane" not in await tab.text()
    assert await tab.page.locator("#step-1 .payload-erased").count() == 0
    assert "Input" in await tab.page.inner_text("#step-1")
    await tab.shot("run-trace-erased")
    assert await tab.axe() == []
    # The governance tab: the correlated entry's reason is ERASED with the erasure id.
    await tab.open(f"#/runs/{ERASED_RUN}/governance", ready="main h2")
    reason = tab.page.locator("table:has(caption:text('Audit entries correlated')) .payload-erased")
    assert await reason.count() == 1 and await reason.get_attribute("data-erasure") == erasure
    assert "Console Subject" not in await tab.text()
    assert await tab.axe() == []
    # The export made before: content erased, Download disabled, the callout names the erasure.
    export = (await _api(served, f"/api/v1/logs/exports/{export_id}", ERASED_TENANT))["export"]
    assert export["content_erased"] and export["erasure_ids"] == [erasure]
    assert [e["basis"] for e in export["erasures"]] == ["ERASURE_BASIS_RECORDED"]
    await tab.open(f"#/exports/{export_id}", ready="#download")
    assert await tab.page.is_disabled("#download")
    note = await tab.text("#content-erased")
    assert "Content erased after export" in note and erasure in note and f"{export['payloads_erased']} payloads" in note
    # the basis (docs/ERASURE.md §3c): this export recorded carrying the subject's payloads
    assert f"{erasure} recorded" in note and "up to" not in note and await tab.page.locator("#erasure-untracked").count() == 0
    await tab.shot("export-erased")
    assert await tab.axe() == []
    await tab.open("#/exports", ready="main table")
    row = tab.page.locator("main table tbody tr", has_text=export_id)
    assert "ERASED" in await row.inner_text() and f"{erasure} recorded" in await row.inner_text()
    await ctx.close()
    assert not tab.problems, tab.problems
