"""Run the examples as their users do, as subprocesses with bounded waits: whole
scripts (`run_script`) and the key-value server (`KvServer`). Every process started
here is stopped by the code that started it, by its own handle, never by name."""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_SERVING = re.compile(r"serving map \S+ on http://([\d.]+):(\d+)")


def run_script(name: str, *args: str, timeout_s: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run examples/<name> to completion (killed after `timeout_s`)."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )


def free_ports(count: int) -> list[int]:
    """Ports free on loopback just now (another process may still take one: callers retry)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class KvServer:
    """One `examples/kv_server.py` process on free loopback ports."""

    data_dir: Path
    node_id: int
    peers: Sequence[str] = ()
    extra: Sequence[str] = ()
    port: int = 0
    gossip_port: int = 0
    http_port: int = 0
    proc: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @property
    def gossip_address(self) -> str:
        return f"127.0.0.1:{self.gossip_port}"

    def start(self, attempts: int = 3) -> None:
        """Start the server and wait until it serves HTTP. A port taken between choosing
        and binding it makes the process exit: then retry on other ports."""
        for attempt in range(attempts):
            self.port, self.gossip_port = free_ports(2)
            if self._start_once():
                return
            self.stop()
            if attempt == attempts - 1:
                raise AssertionError(f"kv_server did not start:\n{self.text()}")

    def _start_once(self) -> bool:
        args = [
            sys.executable,
            str(EXAMPLES / "kv_server.py"),
            f"--node-id={self.node_id}",
            f"--data-dir={self.data_dir}",
            f"--port={self.port}",
            f"--gossip-port={self.gossip_port}",
            "--http-port=0",
            f"--peers={','.join(self.peers)}",
            *self.extra,
        ]
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reader = threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    return False
                continue
            self.output.append(line)
            match = _SERVING.search(line)
            if match:
                self.http_port = int(match.group(2))
                return True
        raise AssertionError(f"kv_server not serving within {START_TIMEOUT_S} s:\n{self.text()}")

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    def text(self) -> str:
        while True:
            try:
                self.output.append(self.lines.get_nowait())
            except queue.Empty:
                return "".join(self.output)

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout_s: float = 40.0
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout_s)
        try:
            conn.request(method, path, body=body)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def raw(self, data: bytes, timeout_s: float = 10.0) -> bytes:
        """Send `data` as is, end the input, and return everything the server answers
        until it closes the connection."""
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout_s) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # end of input: a short body ends here
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    def stop(self) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL after `STOP_TIMEOUT_S`; returns the
        exit code (negative: killed by that signal)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        if self.reader is not None:
            self.reader.join(timeout=STOP_TIMEOUT_S)  # it ends at the pipe's EOF
        if proc.stdout is not None:
            with contextlib.suppress(OSError):
                proc.stdout.close()
        return proc.returncode
