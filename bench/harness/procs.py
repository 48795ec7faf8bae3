"""Processes: run a command and measure its own resource use; start and stop servers."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")


class TimeLimitReached(RuntimeError):
    """A command that was stopped because it was still running at its time limit."""

    def __init__(self, argv: Sequence[str], seconds: float):
        self.seconds = seconds
        super().__init__(f"Stopped at the time limit: `{argv[0]}` was still running after {seconds:,.0f} s")


@dataclass
class Measured:
    """A finished command and the resources its process (and its waited-for children) used."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int
    timed_out: bool = False

    @property
    def cpu_s(self) -> float:
        """User + system CPU seconds."""
        return self.user_s + self.sys_s

    @property
    def peak_rss_mb(self) -> float:
        """Peak resident set size in MB (Linux reports `ru_maxrss` in KiB)."""
        return self.max_rss_kb / 1024.0

    def check(self) -> "Measured":
        """Raises with the tail of stderr when the command failed, and `TimeLimitReached` when it
        was stopped at its time limit."""
        if self.timed_out:
            raise TimeLimitReached(self.argv, self.wall_s)
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-30:])
            raise RuntimeError(f"Command `{' '.join(self.argv)}` exited with {self.returncode}:\n{tail}")
        return self

    def last_json_line(self) -> str:
        """The last line of stdout that looks like a JSON object."""
        for line in reversed(self.stdout.strip().splitlines()):
            if line.startswith("{") and line.endswith("}"):
                return line
        raise RuntimeError(f"Command `{' '.join(self.argv)}` printed no JSON object on stdout")


def cpu_prefix(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` when `cpus` is given, else nothing."""
    return ["taskset", "-c", cpus] if cpus else []


def run_measured(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> Measured:
    """Runs `argv` to completion and returns its output with the rusage of that child alone.

    The child is reaped with `os.wait4`, so the figures are its own (and its waited-for
    descendants'), never the harness's or a server's. A child still running after `timeout_s` is
    killed, and the result says `timed_out`.
    """
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=err)
        deadline = None if timeout_s is None else start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
            if pid != 0:
                break
            if deadline and time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                status = -1
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -9
        out.seek(0)
        err.seek(0)
        return Measured(
            argv=argv,
            returncode=proc.returncode,
            stdout=out.read().decode("utf-8", "replace"),
            stderr=err.read().decode("utf-8", "replace"),
            wall_s=wall,
            user_s=usage.ru_utime,
            sys_s=usage.ru_stime,
            max_rss_kb=usage.ru_maxrss,
            timed_out=status == -1,
        )


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from `/proc/PID/stat`."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return parse_proc_stat_cpu(text) / CLK_TCK


def parse_proc_stat_cpu(stat: str) -> int:
    """utime + stime clock ticks from the text of `/proc/PID/stat`.

    The command name (field 2) is in parentheses and may contain spaces, so fields are counted
    after the last `)`.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


LISTENING = re.compile(r"listening (?:on )?(http://\S+)")


class Server:
    """A server process started for a benchmark, stopped by `close` (or on leaving a `with`)."""

    def __init__(self, argv: Sequence[str], *, ready_url: str | None = None, env=None, timeout_s: float = 60.0,
                 log: Path | None = None):
        self.argv = [str(a) for a in argv]
        self.log_path = log
        if log:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
        stderr = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
        self.url = ready_url
        if ready_url is None:
            self.url = self._read_listening_line(timeout_s)
        else:
            wait_http(ready_url.rstrip("/") + "/v1/models", timeout_s, self.proc)

    def _read_listening_line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            found = LISTENING.search(line)
            if found:
                return found.group(1)
        self.close()
        raise RuntimeError(f"Server `{' '.join(self.argv)}` did not report its address")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def addr(self) -> str:
        """`HOST:PORT` of the server."""
        return self.url.removeprefix("http://").rstrip("/")

    def get_json(self, path: str) -> dict:
        import json

        with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=10) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Polls `url` until it answers 200 or the timeout passes."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"Server exited with {proc.returncode} before answering `{url}`")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as error:  # noqa: BLE001  (any failure means: not ready yet)
            last = error
        time.sleep(0.25)
    raise RuntimeError(f"`{url}` did not answer within {timeout_s:.0f} s: {last}")
