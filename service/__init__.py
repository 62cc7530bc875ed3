"""ECG heartbeat classification service, grouped the way a beat travels through it.

    signal/     beats, context beats, R-peaks and strips, WFDB/FHIR readers: numbers in, numbers out
    models/     networks, compiled ODE solves (fastode/), predictors, artefacts and their registry
    runtime/    what runs a request's work, bounded: batching, inference, strip workers
    admission/  what every request passes first: the in-flight guard and the bookkeeping middleware
    api/        the HTTP routes, one router per concern
    schemas, errors, metrics, settings    the shared vocabulary of requests, answers and limits
    app, server                           wiring: the FastAPI app factory and the process that serves it

Imports run one way only (tests/test_layout.py enforces it): signal imports nothing else of the
service; models import signal; the shared vocabulary imports signal and models; runtime imports
those; admission imports the vocabulary; api imports all of the above but app and server; app wires
everything, server starts app. Nothing in service/ imports training/.
"""
