import eventlet

eventlet.monkey_patch()  # nameko containers in this folder; asyncio tests run in another process

pytest_plugins = ["shared.testing.plugin"]
