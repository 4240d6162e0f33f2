"""ASGI entry point: `uvicorn app:app`, or `python app.py` (settings from FER_* environment variables).

With FER_WORKERS > 1 each worker process imports this module as `app` and builds its own app;
logging is set up here so that workers log like the main process.
"""

from fer.api import ServeSettings, create_app, serve
from fer.config import setup_logging

settings = ServeSettings()
setup_logging(settings.log_level, settings.log_format)

if __name__ == "__main__":
    serve(settings)  # builds the app itself, or, with several workers, has each import this module
else:
    app = create_app(settings)
