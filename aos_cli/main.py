"""``aos-evidence``: argument parsing and dispatch.

Exit status: 0 success, 1 a verification failed, 2 a usage or input error (arguments,
files, credentials, unknown or malformed ids), 3 a service error (UNAVAILABLE,
DEADLINE_EXCEEDED …), 130 interrupted.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from aos_cli.client import EXIT_USAGE, Client, CliError, UsageError
from aos_cli.commands import audit, erasure, export, ledger, overview, retention, runs, search, system, token, witness
from aos_cli.context import Context
from aos_cli.output import Output
from aos_runtime.config import SERVICES, ConfigError, Settings

EXIT_INTERRUPTED = 130
# Global options may be given before or after the command; these apply when given nowhere.
GLOBAL_DEFAULTS = {**dict.fromkeys(SERVICES), "token": None, "json": False, "timeout": 30.0}
# A server bound to every interface is reached locally.

EPILOG = """examples (against `make run`):
  aos-evidence overview highlights
  aos-evidence overview decisions --priority critical
  aos-evidence audit list --limit 20
  aos-evidence runs trace tenant-demo.run-support-103
  aos-evidence export create --run tenant-demo.run-support-103 --bundle SOC2 --format ZIP --download out/
  aos-evidence ledger checkpoint -o cp.json && aos-evidence ledger verify --checkpoint cp.json --key PUBLIC_KEY
  aos-evidence retention set LLM_RUNS --days 365 --class SOC2 --tag soc2
  aos-evidence retention hold --run tenant-demo.run-support-103 --reason "litigation 2026-114"
  aos-evidence witness --log-key VKEY --key witness.key --name witness.example --state witness-state/
"""


def _global_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults: the same options sit on the top parser and on every command, and an
    # option not given at one level must not overwrite the value given at the other.
    common = argparse.ArgumentParser(add_help=False)
    options = common.add_argument_group("global options")
    for service in SERVICES:
        options.add_argument(f"--{service}", metavar="ADDR", default=argparse.SUPPRESS,
                             help=f"{service} service address (default $AOS_BIND_HOST:$AOS_{service.upper()}_PORT)")
    options.add_argument("--token", default=argparse.SUPPRESS,
                         help="bearer token (default $AOS_TOKEN, else one minted from the local development secret)")
    options.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                         help="machine output: one JSON document (proto3 JSON) on stdout")
    options.add_argument("--timeout", metavar="SECONDS", type=float, default=argparse.SUPPRESS,
                         help="deadline of each call (default 30)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(prog="aos-evidence", parents=[common], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Operator CLI of the AOS Evidence Plane: overview, audit ledger, "
                                                 "run traces, signed exports and ledger checkpoints, over gRPC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (token, overview, audit, runs, system, search, export, ledger, retention, witness, erasure):
        module.register(commands, common)
    return parser


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise UsageError(f"configuration: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed help (0) or the usage error (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    out = Output(args.json)
    client: Client | None = None
    try:
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        settings = _settings()
        addresses = {name: getattr(args, name) or settings.addresses[name] for name in SERVICES}
        client = Client(addresses, lambda: args.token or token.default_token(settings, out), args.timeout)
        return args.handler(args, Context(out, settings, client))
    except CliError as error:
        out.error(str(error), error.details)
        return error.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return EXIT_INTERRUPTED
    finally:
        if client is not None:
            client.close()
