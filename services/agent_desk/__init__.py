"""agent_desk: the agents' live console (asyncio: aiohttp HTTP + WebSocket, aio-pika)."""
