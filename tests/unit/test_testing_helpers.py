import socket

from shared.testing.asyncio_helpers import _ephemeral_range, free_port


def test_free_port_is_bindable_and_outside_the_range_outgoing_connections_use():
    low, high = _ephemeral_range()
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
