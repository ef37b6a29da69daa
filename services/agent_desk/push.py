"""The console WebSockets open on this replica, by agent, and sending frames to them.

Each replica only knows its own sockets; events that must reach a console are consumed on a
broadcast queue (one per replica), and the replica holding the agent's socket delivers.
"""
from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from shared.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, eq=False)
class ConsoleSocket:
    agent_id: str
    role: str
    session_id: str
    ws: web.WebSocketResponse


class SocketHub:
    def __init__(self) -> None:
        self._sockets: set[ConsoleSocket] = set()

    def add(self, socket: ConsoleSocket) -> None:
        self._sockets.add(socket)

    def discard(self, socket: ConsoleSocket) -> None:
        self._sockets.discard(socket)

    def sockets(self) -> list[ConsoleSocket]:
        return [s for s in self._sockets if not s.ws.closed]

    def has_agent(self, agent_id: str) -> bool:
        return any(s.agent_id == agent_id and not s.ws.closed for s in self._sockets)

    def agent_ids(self) -> set[str]:
        """Agents with a live socket here (presence heartbeats are refreshed for them)."""
        return {s.agent_id for s in self._sockets if not s.ws.closed}

    async def send_to_agents(self, agent_ids: set[str], frame: dict, *, supervisors: bool = False) -> int:
        """Send ``frame`` to these agents' sockets (and every supervisor's if asked); count sent."""
        targets = [s for s in list(self._sockets)
                   if s.agent_id in agent_ids or (supervisors and s.role == "supervisor")]
        sent = 0
        for socket in targets:
            if socket.ws.closed:
                continue
            try:
                await socket.ws.send_json(frame)
                sent += 1
            except (ConnectionError, RuntimeError) as exc:  # the browser went away mid-send
                log.info("console_push_failed", agent_id=socket.agent_id, error=repr(exc))
        return sent

    async def close_session(self, session_id: str) -> None:
        for socket in [s for s in self._sockets if s.session_id == session_id]:
            await socket.ws.close(code=4401, message=b"signed out")
