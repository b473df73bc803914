"""The Flask application: SageMaker's routes, nothing else.

``POST /invocations`` is the hot path, in order: pick the decoder (415) and the
response type (406) from the headers, read the body (413 over the limit),
decode it to float32 rows (400 naming the row and column), check the row
width, predict, select the outputs, encode. Every refusal is a short JSON
``{"error": ...}`` with its 4xx status; an unexpected failure is logged with
its traceback and answered 500 with no detail, and the worker lives on.
"""
from __future__ import annotations

import json
import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from serve import codecs
from serve.codecs import RequestError
from serve.loading import LoadedModel
from serve.outputs import OutputSelector
from serve.settings import Settings

log = logging.getLogger(__name__)
JSON_TYPE = "application/json"


def create_app(loaded: LoadedModel, settings: Settings, *, max_concurrent_transforms: int = 1) -> Flask:
    """A Flask app serving ``loaded`` as ``settings`` say. The model is loaded before the app
    exists, so /ping is healthy from the first request the app can answer.
    ``max_concurrent_transforms`` is what /execution-parameters advertises to batch transform
    when SAGEMAKER_MAX_CONCURRENT_TRANSFORMS does not say (the server's worker count).
    Raises OutputError when the selected outputs do not fit the model."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_payload_bytes

    predictor = loaded.predictor
    num_feature = loaded.num_feature
    select_outputs = OutputSelector(settings.outputs, loaded.objective, loaded.num_class, settings.threshold)
    selected, batch, default_accept = select_outputs.selected, settings.batch, settings.default_accept
    encoders = codecs.ENCODERS
    execution_parameters = json.dumps({
        "MaxConcurrentTransforms": settings.max_concurrent_transforms or max_concurrent_transforms,
        "BatchStrategy": settings.batch_strategy,
        "MaxPayloadInMB": max(1, settings.max_payload_bytes // (1024 * 1024)),
    })

    @app.get("/ping")
    def ping():
        return Response(status=200)

    @app.get("/execution-parameters")
    def get_execution_parameters():
        return Response(execution_parameters, status=200, content_type=JSON_TYPE)

    @app.post("/invocations")
    def invocations():
        environ = request.environ
        decode = codecs.decoder_for(environ.get("CONTENT_TYPE"))
        accept = codecs.response_type(environ.get("HTTP_ACCEPT"), default_accept)
        body = request.get_data(cache=False)
        if not body:
            raise RequestError(400, "the request body is empty")
        rows = decode(body, num_feature)
        if rows.shape[1] != num_feature:
            raise RequestError(400, f"each row must have {num_feature} values (the model's features); "
                                    f"got {rows.shape[1]}")
        outputs = select_outputs(predictor.predict(rows))
        return Response(encoders[accept](outputs, selected=selected, batch=batch), status=200, content_type=accept)

    @app.errorhandler(RequestError)
    def refuse(error: RequestError):
        log.debug("refused with %d: %s", error.status, error.message)
        return _error_response(error.status, error.message)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Werkzeug's own refusals: 404, 405, 413 (body over MAX_CONTENT_LENGTH), ...
        message = error.description or error.name
        if error.code == 413:
            message = f"the request body is over the limit of {settings.max_payload_bytes} bytes"
        response = _error_response(error.code or 500, message)
        if getattr(error, "valid_methods", None):
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        log.exception("internal error on %s %s", request.method, request.path)
        return _error_response(500, "internal error; the server log has the details")

    return app


def _error_response(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, content_type=JSON_TYPE)
