"""The HTTP service: FastAPI over the same ``Recommender`` the command line uses.

``create_app(model_dir)`` builds the app (tests use it in process); ``mtrec serve`` runs it
on uvicorn. Routes are thin: validate, call the ``Recommender``, serialise. Every error
is a JSON body ``{"error": {"type", "message"}}``; tracebacks stay in the server log.

The files: ``app`` (the factory), ``routes``, ``schemas`` (bodies and limits), ``guard``
(the ASGI guard), ``metrics``, ``holder`` (the live model and reloads), ``server``
(uvicorn, workers), ``protocol`` (slow and oversized requests, connection bounds).
"""

from mtrec.serve.app import create_app
from mtrec.serve.guard import LOOPBACK_HOSTS, MAX_BODY_BYTES, allowed_hosts
from mtrec.serve.holder import ModelHolder
from mtrec.serve.protocol import HEADER_TIMEOUT, MAX_HEAD_BYTES, BatchedAccept, HeaderDeadline
from mtrec.serve.schemas import MAX_CANDIDATES, MAX_GENRES, MAX_ITEMS, MAX_K
from mtrec.serve.server import read_api_key, serve, worker_app

__all__ = [
    "HEADER_TIMEOUT", "LOOPBACK_HOSTS", "MAX_BODY_BYTES", "MAX_CANDIDATES", "MAX_GENRES",
    "MAX_HEAD_BYTES", "MAX_ITEMS", "MAX_K", "BatchedAccept", "HeaderDeadline", "ModelHolder",
    "allowed_hosts", "create_app", "read_api_key", "serve", "worker_app",
]  # fmt: skip
