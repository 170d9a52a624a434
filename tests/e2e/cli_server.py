"""The `loyalty` program for the end-to-end tests, forked from a process that imported it once.

Starting the installed program is a new interpreter importing Celery, SQLAlchemy, Alembic
and pydantic before it reads its first argument, and the tests start it a few hundred
times. Here one server process imports `loyalty.cli` once; each call is a process forked
from it, which takes the call's environment, working directory and standard streams,
runs `main()` as the installed script does (`sys.exit(main())`), runs the exit handlers
and ends with the exit code that script would give. So each call is still a process of
its own, reading its settings at run time as the real program does; only the
interpreter's start and the imports are shared, and the server refuses to serve if
importing wrote anything to stderr (a warning the real program would print on each run).

`LOYALTY_TEST_CLI=exec` runs the installed program instead, for a run that also proves
the console script itself; the workers, the beat, the relay and the README session always
run the installed program.

The server part uses the standard library and `loyalty` only: it runs as a script, not as
a module of the test package.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import locale
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("!I")


# -- the server ---------------------------------------------------------------------------


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError("the client went away")
        data += chunk
    return data


def _exit_code(exc: SystemExit) -> int:
    """What the interpreter makes of `sys.exit(value)`."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    print(exc.code, file=sys.stderr)
    return 1


def _run_child(conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """In the forked process: become the program the client asked for, then exit."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        import random

        random.seed()  # a fresh process would not share the server's sequence
        conn.sendall(f"{os.getpid()}\n".encode())
        from loyalty.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc)
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        # What the interpreter does on the way out: wait for threads, run exit handlers.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        conn.sendall(f"{code}\n".encode())
    finally:
        os._exit(code)


def serve(path: str) -> None:
    # As the installed script: its folder first on the path, not this one.
    sys.path[0] = str(Path(sys.executable).parent)
    import loyalty.cli  # noqa: F401  (the imports every call would make)

    sys.stderr.flush()
    if os.fstat(2).st_size:  # stderr is a file: importing the program said something
        sys.exit("importing loyalty.cli wrote to stderr; run with LOYALTY_TEST_CLI=exec")
    assert threading.active_count() == 1, "threads before fork"
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the calls
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    listener.settimeout(1)
    parent = os.getppid()
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if os.getppid() != parent:  # the test session is gone, however it ended
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)
                return
            continue
        conn.setblocking(True)
        fds: list[int] = []
        try:
            head, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, 3)
            head += _recv_exactly(conn, _HEADER.size - len(head))
            request = json.loads(_recv_exactly(conn, _HEADER.unpack(head)[0]))
        except (EOFError, OSError, ValueError):
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _run_child(conn, request, fds)
        for fd in fds:
            os.close(fd)
        conn.close()


# -- the client ---------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="loyalty-cli-"))
        self.path = str(self.folder / "cli.sock")
        self.log = self.folder / "server.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, self.path],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the CLI server did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self.log.unlink()
            self.folder.rmdir()


_server: _Server | None = None


def _get_server() -> _Server:
    global _server
    if _server is None or not _server.alive():
        _server = _Server()
        atexit.register(_server.close)
    return _server


def _text(data: bytes) -> str:
    """As subprocess.run(text=True) decodes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n") \
        .replace("\r", "\n")


def run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)`,
    argv[0] being the installed `loyalty`."""
    if os.environ.get("LOYALTY_TEST_CLI") == "exec":
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    server = _get_server()
    request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(os.devnull, "rb") as null, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(server.path)
        socket.send_fds(conn, [_HEADER.pack(len(request))],
                        [null.fileno(), out.fileno(), err.fileno()])
        conn.sendall(request)
        deadline = time.monotonic() + timeout
        reply = b""
        timed_out = False
        while reply.count(b"\n") < 2:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = conn.recv(64)
            except TimeoutError:
                chunk, timed_out = b"", True
            if timed_out:
                if b"\n" in reply:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(reply.split(b"\n")[0]), signal.SIGKILL)
                break
            if not chunk:  # the process ended without saying how: killed
                break
            reply += chunk
        lines = reply.split(b"\n")
        out.seek(0)
        err.seek(0)
        stdout, stderr = _text(out.read()), _text(err.read())
    if timed_out:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    code = int(lines[1]) if len(lines) > 2 else -signal.SIGKILL
    return subprocess.CompletedProcess(argv, code, stdout, stderr)


if __name__ == "__main__":
    serve(sys.argv[1])
