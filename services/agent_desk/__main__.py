"""``python -m services.agent_desk``: serve the agents' console until SIGTERM."""
from services.agent_desk.config import Settings
from services.agent_desk.service import create_service
from shared.aio_service import run_service

if __name__ == "__main__":
    run_service(create_service(Settings.from_env()))
