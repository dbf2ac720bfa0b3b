"""Where ntk-lab keeps what it builds or computes, and how it writes it without losing it on a crash."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ntk_lab.errors import NtkLabError


def cache_dir(*parts: str) -> Path:
    """``$NTK_LAB_CACHE/parts`` (default ``~/.cache/ntk_lab/parts``), created if absent."""
    root = Path(os.environ.get("NTK_LAB_CACHE", Path.home() / ".cache" / "ntk_lab")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_folder_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a sibling temporary folder, then rename it to ``target``.

    A crash leaves no half-built ``target``; if another process built it first, theirs is kept.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.exists():
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def writable_folder(out: Path) -> Path:
    """``out``, created if absent; an error naming it if it is a file or cannot be written."""
    if out.exists() and not out.is_dir():
        raise NtkLabError(f"--out {out} is a file: give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NtkLabError(f"--out {out} cannot be created ({e.strerror})") from None
    if not os.access(out, os.W_OK):
        raise NtkLabError(f"--out {out} cannot be written: choose a folder you can write")
    return out


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place: a crash never leaves
    half a file, and two processes writing the same path never mix their bytes."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def enable_compilation_cache() -> Path | None:
    """Keep the XLA programs this process compiles in ``$NTK_LAB_CACHE/xla`` (JAX's persistent
    compilation cache), so that a command run again, or another one with the same model and shapes,
    loads them instead of compiling (compiling a roberta-base kernel takes about a minute; loading it,
    seconds). Programs that compile in under a second are not kept. Returns the folder, or None
    when the user chose one (``JAX_COMPILATION_CACHE_DIR`` or ``jax_compilation_cache_dir``), which is
    kept. Every command line of the project calls it (``ntk_lab.cli.cli_main``)."""
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(jax.config, "jax_compilation_cache_dir", None):
        return None
    path = cache_dir("xla")
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


@contextlib.contextmanager
def compile_seconds() -> Iterator[list[float]]:
    """Yields a list that receives the seconds of each XLA compilation inside the block, read from
    JAX's own log line "Finished XLA compilation of NAME in T sec" (``jax._src.dispatch``, DEBUG).
    The logger's level, propagation and handlers are restored on exit, and nothing is printed.
    A program loaded from the persistent compilation cache logs no such line, so it counts 0."""
    seconds: list[float] = []
    pattern = re.compile(r"Finished XLA compilation of .* in ([0-9.eE+-]+) sec")

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = pattern.match(record.getMessage())
            if found:
                seconds.append(float(found.group(1)))

    logger, handler = logging.getLogger("jax._src.dispatch"), Handler()
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield seconds
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
