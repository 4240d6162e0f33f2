"""ASGI entry point: `uvicorn app:app`, or `python app.py` (settings from FER_* environment variables).

With FER_WORKERS > 1 each worker process imports this module as `app` and builds its own app,
so logging is set up here for them (`serve()` does it for the main process).
"""

from fer.config import Settings, setup_logging
from fer.serving.app import create_app
from fer.serving.server import serve

settings = Settings()

if __name__ == "__main__":
    serve(settings)  # builds the app itself, or, with several workers, has each import this module
else:
    setup_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
