"""``python -m services.dispatcher``: run the dispatcher until SIGTERM."""
import eventlet

eventlet.monkey_patch()

from services.dispatcher.config import Settings  # noqa: E402
from services.dispatcher.service import DispatcherService  # noqa: E402
from shared.nameko_ext import run_service  # noqa: E402


def main() -> None:
    settings = Settings.from_env()
    run_service(DispatcherService, settings.common, **settings.container_config())


if __name__ == "__main__":
    main()
