"""ASGI entry point: `uvicorn app:app`, or `python app.py` (settings from FER_* environment variables)."""

from fer.api import create_app, serve

app = create_app()

if __name__ == "__main__":
    serve()
