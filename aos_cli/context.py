"""What every command handler receives next to its parsed arguments."""
from __future__ import annotations

from dataclasses import dataclass

from aos_cli.client import Client
from aos_cli.output import Output
from aos_runtime.config import Settings


@dataclass(frozen=True)
class Context:
    out: Output
    settings: Settings
    client: Client
