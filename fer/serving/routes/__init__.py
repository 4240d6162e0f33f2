"""One `APIRouter` per route group; `fer.serving.app` includes them."""
