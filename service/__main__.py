"""`ecg-serve` / `python -m service`: serve the models in ECG_MODELS_DIR (default models/) with
uvicorn, in ECG_WORKERS processes (default 1), draining gracefully on SIGTERM or Ctrl-C (see
service.server)."""

from service.server import main

if __name__ == "__main__":
    main()
