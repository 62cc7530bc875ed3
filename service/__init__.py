"""ECG heartbeat classification service: shared beat format, networks and (later) the HTTP API."""
