"""Live events: fan-out of committed events to IMAP IDLE, WebSocket and SSE streams."""
