"""intake_chat settings: the common ones plus the chat endpoint's."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import CommonSettings, Variable, read

VARIABLES = (
    Variable("TM_CHAT_HOST", "127.0.0.1", "address the chat page, widget and WebSocket listen on"),
    Variable("TM_CHAT_PORT", "8081", "port of the chat service"),
    Variable("TM_CHAT_ALLOWED_ORIGINS", "http://127.0.0.1:*,http://localhost:*",
             "comma-separated origins of pages that may embed the widget (besides the chat page's own); "
             "'https://shop.example.com', 'http://localhost:*' (any port) or '*'"),
    Variable("TM_ROSTER_FILE", "deploy/demo/roster.yaml", "agent roster; chat shows customers the agents' display names"),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    host: str
    port: int
    allowed_origins: tuple[str, ...]
    roster_file: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        origins = read(environ, "TM_CHAT_ALLOWED_ORIGINS", _DEFAULTS["TM_CHAT_ALLOWED_ORIGINS"])
        return cls(
            common=CommonSettings.from_env(environ),
            host=read(environ, "TM_CHAT_HOST", _DEFAULTS["TM_CHAT_HOST"]),
            port=read(environ, "TM_CHAT_PORT", _DEFAULTS["TM_CHAT_PORT"], int),
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            roster_file=read(environ, "TM_ROSTER_FILE", _DEFAULTS["TM_ROSTER_FILE"]),
        )
