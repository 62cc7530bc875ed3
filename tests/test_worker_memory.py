"""A strip worker's memory over successive strips: what one strip leaves is freed before the next,
so a worker does not grow past ECG_STRIP_WORKER_RSS_MIB and get replaced in the middle of traffic
(docs/reliability.md, "Strip-worker memory")."""

import json

import numpy as np
import wfdb

from service.app import WARM_UP_STRIP
from service.runtime.strip_worker import StripTask, Worker, rss_mib

STRIPS = 6
GROWTH_MIB = 32  # RSS after the last strip at most this far above RSS after the first


def test_successive_30_minute_strips_do_not_grow_a_worker(fixture_dir, tmp_path):
    record = wfdb.rdrecord(str(fixture_dir / "208"), physical=True, channels=[0])  # MLII, 2 minutes
    signal = np.tile(record.p_signal[:, 0], 15).round(3)  # 30 minutes at 360 Hz
    body = tmp_path / "strip.json"  # above 1 MiB: spooled to a file, as the service does
    body.write_text(json.dumps({"sampling_rate": 360, "signal": signal.tolist()}))
    task = StripTask("strip", path=str(body), model_kinds={"context-odenet": "context"},
                     default_model="context-odenet")
    worker = Worker(2048)
    try:
        assert worker.call(WARM_UP_STRIP)[0] == "ok"
        after = []
        for _ in range(STRIPS):
            reply = worker.call(task)
            assert reply[0] == "ok" and reply[1].beats.shape[0] > 1000, reply[:3]
            after.append(rss_mib(worker.process.pid))  # as the pool reads it, once it has the reply
    finally:
        worker.kill()
    assert max(after) - after[0] < GROWTH_MIB, [round(x) for x in after]
