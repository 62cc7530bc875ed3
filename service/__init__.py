"""ECG heartbeat classification service: beat format, networks, artefact registry and the HTTP API."""
