"""ECG heartbeat classification service, grouped the way a beat travels through it.

    signal/     beats, context beats, R-peaks and strips, the signal-quality gate, WFDB/FHIR readers
                and WFDB annotations out: numbers in, numbers out
    models/     solver settings and card shapes (torch-free), torch networks (training extra), compiled
                ODE solves (fastode/), predictors, artefacts and their registry
    runtime/    what runs a request's work, bounded: batching, inference, strip workers
    admission/  what every request passes first: the in-flight guard and the bookkeeping middleware
    api/        the HTTP routes, one router per concern (the viewer's among them)
    static/     the viewer: plain HTML, JavaScript and CSS, no build step, nothing fetched from outside
    schemas, errors, metrics, settings    the shared vocabulary of requests, answers and limits
    report                                the rhythm report of a strip, from its beats' times and labels
    app, server                           wiring: the FastAPI app factory and the process that serves it
    cli                                   ecg-classify: records and folders classified in-process or by URL

Imports run one way only (tests/test_layout.py enforces it): signal imports nothing else of the
service; models import signal; the shared vocabulary imports signal and models; runtime imports
those; admission imports the vocabulary; api imports all of the above but app and server; app wires
everything, server starts app; cli imports signal, models, the vocabulary (report among it)
and runtime.
Nothing in service/ imports training/.
"""
