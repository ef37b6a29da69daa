"""``python -m services.intake_email``: watch the configured mailbox until SIGTERM."""
import eventlet

eventlet.monkey_patch()  # first: imapclient, redis and kombu sockets must all be cooperative

import sys  # noqa: E402

from shared.config import ConfigError  # noqa: E402
from shared.nameko_ext import run_service  # noqa: E402

from services.intake_email.config import Settings  # noqa: E402
from services.intake_email.service import IntakeEmailService  # noqa: E402


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"intake_email: {exc}")
    run_service(IntakeEmailService, settings.common, **settings.nameko_extra())


if __name__ == "__main__":
    main()
