import sys

import pytest

from harness.procs import Server, TimeLimitReached, parse_proc_stat_cpu, run_measured


def test_proc_stat_fields_are_counted_after_the_command_name():
    # A command name with spaces and parentheses must not shift the fields.
    stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10"
    assert parse_proc_stat_cpu(stat) == 300


def test_run_measured_reports_the_childs_own_cpu_and_output():
    code = "import json\nx = 0\nfor i in range(3_000_000): x += i\nprint('noise')\nprint(json.dumps({'x': x}))"
    measured = run_measured([sys.executable, "-c", code]).check()
    assert measured.returncode == 0
    assert measured.last_json_line() == '{"x": 4499998500000}'
    assert measured.cpu_s > 0.05
    assert measured.wall_s >= measured.cpu_s * 0.5
    assert measured.peak_rss_mb > 1


def test_failed_command_raises_with_its_stderr():
    measured = run_measured([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    assert measured.returncode == 3
    with pytest.raises(RuntimeError, match="exited with 3:\nboom"):
        measured.check()


def test_timeout_kills_the_child():
    measured = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert measured.returncode != 0
    assert measured.wall_s < 10
    assert measured.timed_out
    with pytest.raises(TimeLimitReached, match="was still running after") as stopped:
        measured.check()
    assert 0.5 <= stopped.value.seconds < 10
    assert not run_measured([sys.executable, "-c", "pass"], timeout_s=30).timed_out


def test_server_log_goes_into_a_folder_created_for_it(tmp_path):
    # On a fresh checkout `bench/out/` does not exist yet; the server's log must still be written.
    log = tmp_path / "not" / "yet" / "server.log"
    code = "import sys; sys.stderr.write('started'); sys.stderr.flush(); print('listening http://127.0.0.1:1', flush=True)"
    server = Server([sys.executable, "-c", code], log=log)
    server.close()
    assert server.addr == "127.0.0.1:1"
    assert log.read_text() == "started"
