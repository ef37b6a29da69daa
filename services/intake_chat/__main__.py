"""``python -m services.intake_chat``: chat page, widget and WebSocket until SIGTERM."""
import sys

from shared.aio_service import run_service
from shared.config import ConfigError

from services.intake_chat.config import Settings
from services.intake_chat.service import make_service

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"intake_chat: {exc}")
    run_service(make_service(settings))
