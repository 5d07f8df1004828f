"""The gateway's own CPU per REST call, code copies alternated, without a database (issue #22).

    PYTHONPATH=.:gen:bench .venv/bin/python bench/gateway_cpu_ab.py main=/path/main \
        main_httptools=/path/main:AOS_GATEWAY_HTTP_PARSER=httptools branch=. [--requests 4000] [--rounds 6]

Each NAME=PATH[:KEY=VALUE,...] is one ``python -P -m gateway`` process with PATH first on
PYTHONPATH (and those environment settings), its Logs backend bench/bare_server.py answering
ListAuditEntries with a real 50-entry answer (as bench/profile_gateway.py builds it), so the
gateway's work is all there is; the same backend for every copy. Each round, per copy (order
alternating): --requests ``GET /api/v1/logs/audit?page_size=50`` through h2load --h1 (--clients
keep-alive connections, one request in flight each); the figure is the gateway process's user +
system CPU (/proc) ÷ the calls. Less noise than bench/rest_cpu_load.py (no Logs, no PostgreSQL
beside it), which measures the whole path.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from aos_runtime.auth import mint_token
from profile_gateway import SECRET, answer_bytes
from rest_cpu_load import Gateway, cpu_seconds, h2load_rest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("copies", nargs="+", help="NAME=PATH[:KEY=VALUE,...]")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="aos-bench-gateway-ab-"))
    reply = work / "reply.bin"
    reply.write_bytes(answer_bytes())
    bare = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bare_server.py"), "--method",
                             "/aos.logs.v1.AuditLedgerService/ListAuditEntries", "--response", str(reply)],
                            stdout=subprocess.PIPE, text=True)
    backend = f"127.0.0.1:{bare.stdout.readline().split()[1]}"  # type: ignore[union-attr]
    token = mint_token(secret=SECRET, tenant_id="tenant-a", subject="bench")
    gateways: dict[str, Gateway] = {}
    saved = dict(os.environ)
    try:
        for spec in args.copies:
            name, _, rest = spec.partition("=")
            path, _, settings = rest.partition(":")
            root = Path(path).resolve()
            os.environ["PYTHONPATH"] = f"{root}:{root / 'gen'}"
            (work / name).mkdir()
            try:
                gateways[name] = Gateway(backend, work / name,
                                         dict(item.split("=", 1) for item in settings.split(",") if item))
            finally:
                os.environ.clear()
                os.environ.update(saved)
        for gateway in gateways.values():  # warm: channels, the renderer's store
            h2load_rest(gateway.port, token, requests=1000, connections=args.clients)
        rounds: dict[str, list[float]] = {name: [] for name in gateways}
        order = list(gateways)
        for i in range(args.rounds):
            for name in order if i % 2 == 0 else order[::-1]:
                gateway = gateways[name]
                before = cpu_seconds(gateway.process.pid)
                figures = h2load_rest(gateway.port, token, requests=args.requests, connections=args.clients)
                if figures["http_2xx"] != args.requests:
                    raise RuntimeError(f"{name}: not every call answered 2xx: {figures}")
                ms = round((cpu_seconds(gateway.process.pid) - before) / args.requests * 1000, 3)
                rounds[name].append(ms)
                print(json.dumps({"round": i + 1, "copy": name, "gateway_cpu_ms_per_call": ms,
                                  "calls_per_s": figures["req_per_s"], "load": round(os.getloadavg()[0], 2)}),
                      file=sys.stderr, flush=True)
    finally:
        for gateway in gateways.values():
            gateway.stop()
        bare.terminate()
        bare.wait(timeout=30)
    print(json.dumps({"load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "gateway_cpu_ms_per_call": {name: {"rounds": values, "median": statistics.median(values)}
                                                  for name, values in rounds.items()}}, indent=2))


if __name__ == "__main__":
    main()
