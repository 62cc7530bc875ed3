"""`ecg-serve` / `python -m service`: serve the models in ECG_MODELS_DIR (default models/) with
uvicorn, draining gracefully on SIGTERM or Ctrl-C:

1. readiness (/readyz, /v2/health/ready) turns 503 at once, so load balancers stop sending;
2. for ECG_SHUTDOWN_DELAY_S seconds the server still accepts and serves (default 0);
3. the listener closes (new connections are refused) and accepted requests finish, for at most
   ECG_DRAIN_TIMEOUT_S seconds; then the models and strip workers stop.

A second signal during the delay skips straight to step 3; one during step 3 stops at once (as
uvicorn does).
"""

from __future__ import annotations

import logging
import time

import uvicorn

from service.app import create_app
from service.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app, delay_s: float):
        super().__init__(config)
        self.app_state, self.delay_s = app.state, delay_s
        self.signal: int | None = None
        self.draining_since: float | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.draining_since is None:
            self.app_state.draining = True
            self.draining_since, self.signal = time.monotonic(), sig
            if self.delay_s > 0:
                logging.getLogger("service").info("draining: ready 503, closing in %.1f s", self.delay_s)
                return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if (self.draining_since is not None and not self.should_exit
                and time.monotonic() - self.draining_since >= self.delay_s):
            super().handle_exit(self.signal, None)
        return await super().on_tick(counter)


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            access_log=False, timeout_graceful_shutdown=settings.drain_timeout_s)
    DrainingServer(config, app, settings.shutdown_delay_s).run()


if __name__ == "__main__":
    main()
