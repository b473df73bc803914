"""SageMaker's multi-model routes (``SAGEMAKER_MULTI_MODEL=true``): load, list, describe,
unload and invoke models at run time.

    POST   /models                 {"model_name", "url"}: load (409 loaded, 507 no memory)
    GET    /models                 list, paged with next_page_token / nextPageToken
    GET    /models/{name}          describe one, with its measured memory
    DELETE /models/{name}          unload (404 unknown)
    POST   /models/{name}/invoke   predict: exactly /invocations' codecs, Accept, outputs, errors

How one load reaches every worker: the worker that gets ``POST /models`` stages the
model, loads it with :func:`serve.loading.load_model` (the same checks, self-test and
loud fallback as a single model), measures it and records it in the shared
:class:`serve.registry.Registry`. Any other worker loads it from the staged copy the
first time a request for it arrives (lazy ``dlopen``), and drops it (``dlclose``) when
the registry's generation counter says it was unloaded: each request reads that
counter from a shared page, and a poller in each worker reads it twice a second, so
that an idle worker frees an unloaded model too.

Under gevent, staging and loading run in gevent's thread pool: the worker keeps
answering /ping and other models' requests while a model loads.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

from serve.app import _STATUS_LINES, JSON_TYPE, ServeApp, _error_body
from serve.codecs import RequestError
from serve.loading import ModelLoadError, announce_fallback, load_model
from serve.memory import ModelMemory, anonymous_bytes, mapped_file_bytes, on_tmpfs
from serve.predictors import close_predictor
from serve.registry import Registry, check_name

log = logging.getLogger(__name__)

PAGE_SIZE = 100                 # models per GET /models page unless page_size says
MAX_LOAD_BODY = 64 * 1024       # a load request is a small JSON object
POLL_S = 0.5                    # how often an idle worker looks for unloads
TARGET_HEADER = "HTTP_X_AMZN_SAGEMAKER_TARGET_MODEL"


@dataclass(eq=False)
class _WorkerModel:
    """One model as one worker holds it. ``users``: requests in flight on it (the library
    is closed only when none is); ``dropped``: unloaded, close when the last user leaves."""

    name: str
    stage_id: str
    app: ServeApp
    users: int = 0
    dropped: bool = False


class MultiModelApp:
    """WSGI callable for multi-model mode: the model routes here, /ping and
    /execution-parameters (and JSON 404/405s) by ``flask_app``.
    ``workers``: the server's worker processes (each may hold a copy of each model)."""

    def __init__(self, registry: Registry, settings, flask_app, *, workers: int, offload: bool = False):
        self.registry = registry
        self.settings = settings
        self.flask_app = flask_app
        self.workers = workers
        self.offload = offload
        self._models: dict[str, _WorkerModel] = {}
        self._seen = -1
        self._lock = threading.Lock()                     # the table and the users counters
        self._name_locks: dict[str, threading.Lock] = {}  # one lazy load per name at a time
        self._staged_in_memory = on_tmpfs(registry.state_dir)

    # --- WSGI ------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        if path != "/models" and not path.startswith("/models/") and path != "/invocations":
            return self.flask_app(environ, start_response)
        method = environ["REQUEST_METHOD"]
        allow = None
        try:
            if path == "/invocations":
                raise RequestError(404, "this server runs multi-model endpoints: "
                                        "POST /models/{name}/invoke")
            if path == "/models":
                allow = "GET, POST"
                if method == "GET":
                    body, content_type = self.list_models(environ.get("QUERY_STRING", "")), JSON_TYPE
                elif method == "POST":
                    body, content_type = self.load(environ), JSON_TYPE
                else:
                    raise RequestError(405, "/models takes GET (list) or POST (load)")
            elif path.endswith("/invoke"):
                allow = "POST"
                name = self._name_in_path(path[len("/models/"):-len("/invoke")])
                if method != "POST":
                    raise RequestError(405, "/models/{name}/invoke takes POST")
                body, content_type = self.invoke(name, environ)
            else:
                allow = "GET, DELETE"
                name = self._name_in_path(path[len("/models/"):])
                if method == "GET":
                    body, content_type = self.describe(name), JSON_TYPE
                elif method == "DELETE":
                    body, content_type = self.unload(name), JSON_TYPE
                else:
                    raise RequestError(405, "/models/{name} takes GET (describe) or DELETE (unload)")
            status = 200
        except RequestError as error:
            log.debug("%s %s refused with %d: %s (target model %s)", method, path, error.status,
                      error.message, environ.get(TARGET_HEADER))
            status, body, content_type = error.status, _error_body(error.message), JSON_TYPE
        except Exception:   # a bug or a native failure: log it, answer 500, keep the worker
            log.exception("internal error on %s %s (target model %s)", method, path, environ.get(TARGET_HEADER))
            status, body, content_type = 500, _error_body("internal error; the server log has the details"), JSON_TYPE
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if status == 405 and allow:
            headers.append(("Allow", allow))
        start_response(_STATUS_LINES[status], headers)
        return [body]

    @staticmethod
    def _name_in_path(name: str) -> str:
        if not name or "/" in name:
            raise RequestError(404, "no such route: /models/{name} takes one model name")
        return check_name(name)

    # --- invoke (the hot path of this mode) -------------------------------------------------

    def invoke(self, name: str, environ) -> tuple[bytes, str]:
        if self.registry.generation() != self._seen:
            self.reconcile()
        with self._lock:   # look up and count in one step: an unload closes only unused libraries
            model = self._models.get(name)
            if model is not None:
                model.users += 1
        if model is None:
            model = self._load_here(name, environ.get(TARGET_HEADER))
        try:
            return model.app.invoke(environ)
        finally:
            with self._lock:
                model.users -= 1
                close = model.dropped and model.users == 0
            if close:
                self._close(model)

    def _load_here(self, name: str, target: str | None) -> _WorkerModel:
        """A model the registry has but this worker does not yet: load it from its staged copy.
        Returns it counted as in use by the caller."""
        lock = self._name_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                model = self._models.get(name)
                if model is not None:
                    model.users += 1
                    return model
            entry = self.registry.get(name)
            if entry is None or entry.state != "ready":
                raise RequestError(404, f"model {name!r} is not loaded; load it with POST /models")
            started = time.perf_counter()
            try:
                app = self._run(self._build, self.registry.staged_path(entry), False)
            except (ModelLoadError, OSError) as exc:
                if self._unloaded_since(entry):   # its copy went away
                    raise RequestError(404, f"model {name!r} is not loaded") from None
                log.error("model %s loaded in another worker cannot be loaded in this one: %s", name, exc)
                raise RequestError(500, f"model {name!r} cannot be loaded in this worker: {exc}") from None
            if self._unloaded_since(entry):
                # the copy may have gone half-way through the load (seen: model.so gone, model.ubj
                # still there, so a silent stock predictor)
                close_predictor(app.predictor)
                raise RequestError(404, f"model {name!r} is not loaded")
            announce_fallback(app.loaded)   # only for a load that is kept: a dropped one misleads
            model = _WorkerModel(name, entry.stage_id, app, users=1)
            with self._lock:
                self._models[name] = model
            log.info("model %s loaded in this worker in %.0f ms for target model %s: %s", name,
                     1000 * (time.perf_counter() - started), target, app.loaded.describe())
            return model

    def _unloaded_since(self, entry) -> bool:
        """Whether ``entry`` was unloaded (or replaced) since it was read. The registry forgets an
        entry before it deletes its staged copy, so a load that still finds the entry afterwards
        read the whole copy."""
        now = self.registry.get(entry.name)
        return now is None or now.stage_id != entry.stage_id

    # --- load, list, describe, unload --------------------------------------------------------

    def load(self, environ) -> bytes:
        name, url = self._load_request(environ)
        source = self.registry.resolve_url(url)
        entry = self.registry.reserve(name, url, source)
        app = None
        try:
            started = time.perf_counter()
            staged = self._run(self.registry.stage, entry, source)
            heap_before = anonymous_bytes()
            try:
                app = self._run(self._build, staged)
            except ModelLoadError as exc:
                raise RequestError(422, f"cannot load model {name!r}: {exc}") from None
            memory = ModelMemory(
                library_bytes=sum(mapped_file_bytes(path.resolve()) for path in staged.glob("*.so")),
                per_worker_bytes=max(0, anonymous_bytes() - heap_before),
                workers=self.workers,
                staged_bytes=_files_size(staged) if self._staged_in_memory else 0)
            self.registry.commit(entry, memory, app.loaded.describe())
        except BaseException:
            self.registry.abort(entry)
            if app is not None:
                close_predictor(app.predictor)
            raise
        with self._lock:
            self._models[name] = _WorkerModel(name, entry.stage_id, app)
        log.info("model %s loaded from %s in %.0f ms (%.1f MiB with %d worker copies): %s", name, url,
                 1000 * (time.perf_counter() - started), memory.total_bytes / 2**20, self.workers,
                 app.loaded.describe())
        return json.dumps({"modelName": name, "modelUrl": url, "status": "loaded"}).encode()

    def _load_request(self, environ) -> tuple[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise RequestError(400, "Content-Length is not a number") from None
        if length > MAX_LOAD_BODY:
            raise RequestError(413, f"a load request is at most {MAX_LOAD_BODY} bytes")
        raw = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read(MAX_LOAD_BODY + 1)
        if len(raw) > MAX_LOAD_BODY:
            raise RequestError(413, f"a load request is at most {MAX_LOAD_BODY} bytes")
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, 'the body must be JSON: {"model_name": ..., "url": ...}') from None
        if not isinstance(request, dict) or "model_name" not in request or "url" not in request:
            raise RequestError(400, 'the body must be a JSON object with "model_name" and "url"')
        return check_name(request["model_name"]), request["url"]

    def list_models(self, query: str) -> bytes:
        params = parse_qs(query)
        size = PAGE_SIZE
        if params.get("page_size"):
            try:
                size = int(params["page_size"][0])
            except ValueError:
                size = 0
            if not 1 <= size <= 1000:
                raise RequestError(400, "page_size must be a whole number from 1 to 1000")
        after = ""
        token = (params.get("next_page_token") or params.get("nextPageToken") or [""])[0]
        if token:
            try:
                after = check_name(base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode())
            except (binascii.Error, ValueError, RequestError):
                raise RequestError(400, "next_page_token is not a token this server gave") from None
        ready = [entry for entry in self.registry.ready() if entry.name > after]
        page = ready[:size]
        listing = {"models": [{"modelName": entry.name, "modelUrl": entry.url} for entry in page]}
        if len(ready) > size:
            listing["nextPageToken"] = base64.urlsafe_b64encode(page[-1].name.encode()).decode()
        return json.dumps(listing).encode()

    def describe(self, name: str) -> bytes:
        entry = self.registry.get(name)
        if entry is None or entry.state != "ready":
            raise RequestError(404, f"model {name!r} is not loaded")
        return json.dumps({
            "modelName": entry.name, "modelUrl": entry.url, "loadedAt": entry.loaded_at,
            "memory": entry.memory.to_dict() if entry.memory else None,
            "predictor": entry.predictor,
        }).encode()

    def unload(self, name: str) -> bytes:
        self.registry.remove(name)
        self.reconcile()
        log.info("model %s unloaded", name)
        return json.dumps({"modelName": name, "status": "unloaded"}).encode()

    # --- keeping this worker in step with the registry ------------------------------------

    def reconcile(self) -> None:
        """Drop (and close) the models this worker holds that the registry no longer has."""
        generation = self.registry.generation()   # read first: a change during the scan shows next time
        ready = {entry.name: entry.stage_id for entry in self.registry.ready()}
        to_close = []
        with self._lock:
            for name, model in list(self._models.items()):
                if ready.get(name) != model.stage_id:
                    del self._models[name]
                    model.dropped = True
                    if model.users == 0:
                        to_close.append(model)
            self._seen = generation
        for model in to_close:
            self._close(model)

    def start_worker(self) -> None:
        """In each worker after the fork: poll the registry, so that an idle worker frees
        unloaded models too (a greenlet under gevent, whose threading is patched by then)."""
        def poll():
            while True:
                time.sleep(POLL_S)
                try:
                    if self.registry.generation() != self._seen:
                        self.reconcile()
                except Exception:   # keep polling: a failed scan is retried at the next tick
                    log.exception("multi-model registry poll failed")

        threading.Thread(target=poll, name="registry-poll", daemon=True).start()

    def _close(self, model: _WorkerModel) -> None:
        close_predictor(model.app.predictor)
        log.debug("model %s closed in this worker", model.name)

    # --- helpers ------------------------------------------------------------------------

    def _build(self, folder: Path, announce: bool = True) -> ServeApp:
        """Load the model in ``folder`` as a single model is loaded, and its invoker
        (``announce``: as serve.loading.load_model's)."""
        loaded = load_model(folder, self.settings.predictor, announce=announce)
        try:
            return ServeApp(loaded, self.settings, self.flask_app, offload_large=self.offload)
        except ValueError as exc:   # OutputError: SAGEMAKER_INFERENCE_OUTPUT does not fit this model
            close_predictor(loaded.predictor)
            raise RequestError(400, f"model cannot give the selected outputs: {exc}") from None

    def _run(self, function, *args):
        """Run blocking work off gevent's event loop when serving under gevent."""
        if self.offload:
            from gevent import get_hub

            # gevent prints a traceback for an exception raised in its pool: carry it back instead
            error, result = get_hub().threadpool.apply(_captured, (function, args))
            if error is not None:
                raise error
            return result
        return function(*args)


def _captured(function, args):
    try:
        return None, function(*args)
    except Exception as exc:
        return exc, None


def _files_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


# gunicorn's default access log line, plus the caller's TargetModel (the contract's header for logs).
ACCESS_LOG_FORMAT = ('%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
                     'target_model="%({x-amzn-sagemaker-target-model}i)s"')


def memory_budget(settings) -> int:
    """Bytes all loaded models may cost: SERVE_MEMORY_BUDGET_MB, else SERVE_MEMORY_FRACTION of
    the container's memory limit (the rest is for the workers themselves and requests)."""
    from serve.memory import container_memory_limit

    if settings.memory_budget_mb is not None:
        return int(settings.memory_budget_mb * 2**20)
    return int(settings.memory_fraction * container_memory_limit())


def serve_multi_model(settings, state_dir: Path) -> int:
    """Serve the multi-model routes with gunicorn until it stops. This mode runs on gunicorn +
    gevent whatever the default front end: each worker starts its registry poller from
    gunicorn's post_worker_init hook, which granian has no equivalent of."""
    import dataclasses

    from serve.app import create_flask_app
    from serve.cpus import available_cpus
    from serve.gunicorn_conf import GRANIAN, GunicornServer, gunicorn_options, plan_workers

    if settings.frontend == GRANIAN:
        log.error("cannot serve: multi-model endpoints run on gunicorn + gevent; unset SERVE_FRONTEND=granian")
        return 2
    plan = plan_workers(dataclasses.replace(settings, frontend="gunicorn"), available_cpus())
    budget = memory_budget(settings)
    registry = Registry(state_dir, settings.model_root, budget).create()
    app = MultiModelApp(registry, settings, create_flask_app(settings, plan.workers), workers=plan.workers,
                        offload=plan.worker_class == "gevent")
    note = f"multi-model endpoint, models from {settings.model_root}, memory budget {budget / 2**20:.0f} MiB"
    options = gunicorn_options(settings, plan, note)
    options["post_worker_init"] = lambda worker: app.start_worker()
    options["access_log_format"] = ACCESS_LOG_FORMAT
    log.info("serving a %s. gunicorn: %s, on %s:%d", note, plan.describe(), settings.host, settings.port)
    GunicornServer(lambda: app, options).run()
    return 0
