"""notifier: acknowledgements, agent replies and SLA notices by email (asyncio: aio-pika + aiosmtplib)."""
