"""``python -m services.notifier``: consume, send mail, stop cleanly on SIGTERM."""
from services.notifier.config import Settings
from services.notifier.service import create_service
from shared.aio_service import run_service

if __name__ == "__main__":
    run_service(create_service(Settings.from_env()))
