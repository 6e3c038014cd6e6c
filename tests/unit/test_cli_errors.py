"""A broker or a Redis that cannot be reached ends each command family with one line that names
what was tried and the setting to change, and a non-zero exit."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from stream_app.cli import main
from stream_app.tools.embedded.process import free_port


@pytest.mark.parametrize("command", [["report", "base"], ["inspect", "8613800000001"], ["baselines"],
                                     ["model", "report"]])
def test_a_redis_that_cannot_be_reached_is_one_line_without_the_password(command: list[str]) -> None:
    port = free_port()  # nothing listens there
    done = CliRunner(env={"REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}).invoke(main, command)
    assert done.exit_code == 1, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: Redis at redis://127.0.0.1:{port}/0 cannot be reached (") and "REDIS_URL" in line
    assert "hunter2" not in line


@pytest.mark.parametrize("command", [["calls", "daily", "--day", "2026-11-30"], ["report", "campaign"],
                                     ["simulate", "--customers", "5", "--days", "2", "--truth", "truth.jsonl"]])
def test_a_broker_that_cannot_be_reached_is_one_line(command: list[str]) -> None:
    port = free_port()  # readers (calls, campaign, queue) and writers (simulate, replay-monthly) alike
    runner = CliRunner(env={"KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    with runner.isolated_filesystem():
        done = runner.invoke(main, command)
    assert done.exit_code == 1, done.output
    [line] = done.output.strip().splitlines()
    assert line.startswith(f"Error: cannot connect to Kafka (PLAINTEXT): 127.0.0.1:{port}: ConnectionRefusedError")
    assert line.endswith("; check KAFKA_BOOTSTRAP and that the broker is running")
