"""Calling a compiled model: THE one way the project runs a TL2cgen library.

Verification, the crossover measurement, the server's compiled predictor and
the benchmark all go through :class:`CompiledModel`.

Two ways into the same generated ``predict()`` function:

* ``direct`` (used whenever the library has it): the ``mc_predict_dense``
  entry point that :mod:`model_compile.compiler` compiles into every library
  (see ``batch_predict.c``), called through ctypes with numpy buffers. One C
  call per batch, no DMatrix. It is reentrant and ctypes releases the GIL
  during the call, so several threads may predict at once. One float32 row
  (the bid/no-bid request) takes a shorter way: it is copied into a buffer
  of the calling thread whose address and ctypes arguments were made once,
  because finding a numpy array's address (``.ctypes.data``) costs more than
  walking 50 trees.
* ``tl2cgen``: ``tl2cgen.Predictor`` + ``tl2cgen.DMatrix``, for libraries made
  by plain TL2cgen. TL2cgen allows one caller at a time, so calls are
  serialized with a lock (safe, but threads wait for each other).

Both give bit-identical results (``tests/model_core/test_runtime.py``).

The library is loaded with dlopen, which returns the already-loaded copy for
a path it has seen: load a new library from a new path, never by overwriting
a loaded one.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

_ENTRY_POINT = "mc_predict_dense"
_FLOAT32 = np.dtype(np.float32)
_ERRORS = {-1: "wrong number of features", -2: "out of memory"}


class CompiledModel:
    """A loaded TL2cgen library.

    ``libpath``: the ``.so``. ``backend``: ``"auto"`` (direct when the library
    has the model_compile entry point, else tl2cgen), ``"direct"`` or ``"tl2cgen"``.
    """

    def __init__(self, libpath: str | Path, backend: str = "auto"):
        self.libpath = Path(libpath).resolve()
        if not self.libpath.is_file():
            raise FileNotFoundError(f"compiled library not found: {self.libpath}")
        if backend not in ("auto", "direct", "tl2cgen"):
            raise ValueError(f"unknown backend {backend!r}")
        # RTLD_LOCAL: two models' libraries export the same symbol names.
        self._lib = ctypes.CDLL(str(self.libpath), mode=ctypes.RTLD_LOCAL)
        self.num_feature = int(self._c("get_num_feature", ctypes.c_int32)())
        num_target = int(self._c("get_num_target", ctypes.c_int32)())
        classes = (ctypes.c_int32 * num_target)()
        self._c("get_num_class", None, [ctypes.c_void_p])(classes)
        self.num_target = num_target
        self.num_class = max(classes)
        self.output_width = num_target * self.num_class

        has_direct = hasattr(self._lib, _ENTRY_POINT)
        if backend == "direct" and not has_direct:
            raise ValueError(f"{self.libpath} has no {_ENTRY_POINT}: not compiled by model_compile")
        self.backend = "direct" if (backend != "tl2cgen" and has_direct) else "tl2cgen"
        self._one_row_shape = (1, self.num_feature) if self.backend == "direct" else None
        self._per_thread = threading.local()    # see _one_row
        if self.backend == "direct":
            self._predict_dense = self._c(
                _ENTRY_POINT, ctypes.c_int32,
                [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p])
        else:
            import tl2cgen  # only plain-TL2cgen libraries need it

            # One thread: the server scales with processes, and OpenMP threads
            # in every worker would fight over the same cores.
            self._predictor = tl2cgen.Predictor(str(self.libpath), nthread=1)
            self._lock = threading.Lock()

    def close(self) -> None:
        """Unload the library (dlclose) so that its pages can go: for a multi-model server
        that unloads a model. The caller guarantees that no call is in flight and that
        this object is not used again. Only the direct backend is closed; a plain-TL2cgen
        library stays mapped until the process ends."""
        if self.backend != "direct" or self._lib is None:
            return
        import _ctypes

        handle, self._lib, self._predict_dense = self._lib._handle, None, None
        _ctypes.dlclose(handle)

    def _c(self, name: str, restype, argtypes=()):
        fn = getattr(self._lib, name)
        fn.restype = restype
        fn.argtypes = list(argtypes)
        return fn

    @property
    def output_shape_suffix(self) -> tuple[int, ...]:
        """() for one output per row (binary, regression, ranking), (num_class,) otherwise."""
        return () if self.output_width == 1 else (self.output_width,)

    def predict(self, X: np.ndarray, margin: bool = False) -> np.ndarray:
        """Predict a batch of rows.

        ``X``: 2-D array of shape (n, num_feature), NaN = missing; float32
        C-contiguous avoids a copy (anything else is converted). ``margin``:
        the raw sum of leaves + base score, before the objective's transform.
        Returns float32 of shape (n,) for one output per row, (n, num_class)
        for multiclass. Raises ValueError for a wrong shape.
        """
        if type(X) is np.ndarray and X.dtype is _FLOAT32 and X.shape == self._one_row_shape:
            return self._one_row(X, margin)
        return self.predict_batch(X, margin)

    def predict_batch(self, X: np.ndarray, margin: bool = False) -> np.ndarray:
        """``predict`` without the one-row shortcut: the way every batch goes (the
        benchmark times one row both ways)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.num_feature:
            raise ValueError(f"expected rows of {self.num_feature} features, got shape {X.shape}")
        n = X.shape[0]
        if self.backend == "direct":
            out = np.empty((n, self.output_width), dtype=np.float32)
            if n:
                rc = self._predict_dense(X.ctypes.data, n, self.num_feature, int(margin), out.ctypes.data)
                if rc != 0:
                    raise RuntimeError(f"{_ENTRY_POINT} failed: {_ERRORS.get(rc, rc)}")
        else:
            out = self._predict_tl2cgen(X, margin)
        return out.reshape((n,) + self.output_shape_suffix)

    def _one_row(self, X: np.ndarray, margin: bool) -> np.ndarray:
        """``predict`` of one float32 row (direct backend), without building ctypes arguments
        per call: the row is copied into this thread's input buffer (threads never share one,
        so the call stays reentrant) and the answer copied out of this thread's output buffer."""
        try:
            row, out, calls = self._per_thread.buffers
        except AttributeError:
            row = np.empty(self._one_row_shape, dtype=np.float32)
            out = np.empty((1,) + self.output_shape_suffix, dtype=np.float32)
            common = (ctypes.c_void_p(row.ctypes.data), ctypes.c_int64(1), ctypes.c_int32(self.num_feature))
            calls = tuple(common + (ctypes.c_int32(m), ctypes.c_void_p(out.ctypes.data)) for m in (0, 1))
            self._per_thread.buffers = row, out, calls
        row[...] = X
        rc = self._predict_dense(*calls[1 if margin else 0])
        if rc != 0:
            raise RuntimeError(f"{_ENTRY_POINT} failed: {_ERRORS.get(rc, rc)}")
        return out.copy()

    def _predict_tl2cgen(self, X: np.ndarray, margin: bool) -> np.ndarray:
        import tl2cgen

        if X.shape[0] == 0:
            return np.empty((0, self.output_width), dtype=np.float32)
        dmat = tl2cgen.DMatrix(X, dtype="float32")
        with self._lock:
            out = self._predictor.predict(dmat, pred_margin=margin)
        return np.asarray(out, dtype=np.float32).reshape(X.shape[0], self.output_width)
