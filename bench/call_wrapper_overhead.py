"""What the call wrapper costs per call: the server's CPU time per unary call for one fixed
reply, with the interceptors the services install (aos_runtime.metrics.RpcMetrics, then
aos_runtime.server.CallPolicy: token check, scope, request id, deadline, call log line) on or off.

    .venv/bin/python bench/call_wrapper_overhead.py --calls 4000 --rounds 3

Each configuration runs its own grpc.aio server in this process (the services' channel
options), on a contract method (/aos.logs.v1.AuditLedgerService/GetAuditEntry, scope logs.read)
whose handler returns the same fixed bytes at once: no database, no protobuf work, so what
differs between configurations is the wrapper alone. The client is another process (its CPU
is not counted) making --calls sequential calls with a real token. The figure is this
process's CPU time (time.process_time: every thread, gRPC's C core included) over the calls,
divided by their number; the median of --rounds rounds, configurations interleaved per round.
CPU time, not wall time: robust on a loaded machine. The call log line goes to a null
handler at INFO (formatted as the services format it, not written to a terminal).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aos_runtime import auth, metrics
from aos_runtime.server import CallPolicy, server_options

METHOD = "/aos.logs.v1.AuditLedgerService/GetAuditEntry"
SECRET = "bench-secret-" + "x" * 40
REPLY = b"\n\x05hello" * 20
CONFIGS = {"bare": (False, False), "metrics": (True, False), "policy": (False, True), "both": (True, True)}

CLIENT = r"""
import sys, grpc, time
port, calls, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
call = ch.unary_unary(sys.argv[4])
meta = (("authorization", "Bearer " + token),)
for _ in range(50):
    call(b"", metadata=meta, timeout=10)
print("WARM", flush=True)
sys.stdin.readline()
for _ in range(calls):
    call(b"", metadata=meta, timeout=10)
print("DONE", flush=True)
"""


class Fixed(grpc.GenericRpcHandler):
    def __init__(self) -> None:
        async def answer(request: bytes, context) -> bytes:
            return REPLY

        self.handler = grpc.unary_unary_rpc_method_handler(answer)

    def service(self, details):
        return self.handler if details.method == METHOD else None


async def one_round(name: str, calls: int, token: str) -> float:
    with_metrics, with_policy = CONFIGS[name]
    interceptors: list[grpc.aio.ServerInterceptor] = []
    if with_metrics:
        interceptors.append(metrics.RpcMetrics())
    if with_policy:
        verifier = auth.TokenVerifier(secret=SECRET, public_key_pem=None, audience="aos-evidence", issuer=None)
        interceptors.append(CallPolicy(verifier, {METHOD: "logs.read"}, service="logs"))
    server = grpc.aio.server(interceptors=interceptors, options=server_options(8 * 1024 * 1024))
    server.add_generic_rpc_handlers((Fixed(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, str(port), str(calls), token,
                                                  METHOD, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert client.stdout and client.stdin
    assert (await client.stdout.readline()).strip() == b"WARM"
    cpu = time.process_time()
    client.stdin.write(b"go\n")
    await client.stdin.drain()
    assert (await client.stdout.readline()).strip() == b"DONE"
    spent = time.process_time() - cpu
    await client.wait()
    await server.stop(None)
    return spent / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logger = logging.getLogger()
    logger.handlers[:] = [logging.NullHandler()]
    logger.setLevel(logging.INFO)
    token = auth.mint_token(secret=SECRET, tenant_id="tenant-bench", subject="bench")
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name in CONFIGS:
            results[name].append(await one_round(name, args.calls, token))
    median = {name: statistics.median(v) for name, v in results.items()}
    out = {"calls": args.calls, "rounds": args.rounds, "load_average": os.getloadavg(),
           "server_cpu_us_per_call": {name: {"median": round(m, 1), "rounds": [round(x, 1) for x in results[name]]}
                                      for name, m in median.items()},
           "overhead_us_per_call": {"metrics": round(median["metrics"] - median["bare"], 1),
                                    "policy": round(median["policy"] - median["bare"], 1),
                                    "both": round(median["both"] - median["bare"], 1)}}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
