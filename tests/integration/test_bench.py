import json

import pytest
from click.testing import CliRunner

from stream_app.cli.main import main
from stream_app.windows.state import STATE

pytestmark = pytest.mark.integration


def test_bench_reports_state_figures_as_a_json_last_line(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["bench", "--no-broker", "--customers", "150", "--days", "20", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["customers"] == 150 and figures["events"] > 150 * 20
    assert figures["pipeline_events_per_s"] > 0
    # MEMORY USAGE counts the record without its zero bytes, its tail and Redis's own overhead for the key:
    # twenty days of traffic leave most of a customer's counters at zero.
    assert 200 < figures["redis_bytes_per_customer"] < STATE.itemsize == figures["state_record_bytes"]
    assert figures["rules"] == 20 and figures["rules_us_per_customer"] > 0
    assert figures["model_score_us_per_customer"] > 0 and figures["model_learn_us_per_label"] > 0
    assert figures["boosted_score_us_per_customer"] > 0 and figures["boosted_refit_s"] > 0
    # The off-net book, measured in the same run as the traffic without it.
    assert figures["pipeline_events_per_s_without_book"] > 0 and figures["offnet_numbers"] > 150
    assert 40 < figures["offnet_bytes_per_number"] < 400 and figures["offnet_bytes_per_customer"] > 0
    # Where the pipeline's time goes, stage by stage, within the time the pass took.
    stages = figures["stages"]
    assert {"decode", "load", "apply", "derive", "rules", "outputs", "encode", "check", "write", "other"} <= set(stages)
    assert sum(s["share"] for s in stages.values()) == pytest.approx(1.0, abs=0.01)


# The latency phase at a share of the worker's rate, or at a fixed rate that compares builds alike.
@pytest.mark.parametrize("pace", [["--load", "0.7"], ["--rate", "900"]], ids=["load", "rate"])
def test_bench_runs_the_ceiling_and_the_real_worker_on_the_same_events(
        tansu_bootstrap: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, pace: list[str]) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", tansu_bootstrap)
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["bench", "--events", "20000", "--customers", "2000", "--latency-seconds", "5",
                                       *pace, "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    assert figures["events"] == 20000 and figures["customers"] == 2000
    # The measured days follow a day of warm-up, so each customer's first event of a day takes the
    # snapshot of the day before, as on an operator's ordinary day (and in the latency phase).
    assert figures["warmup_events"] > 5000 and 0.01 < figures["snapshots_per_event"] < 0.5
    assert figures["events_per_s"] > 0 and figures["ceiling_events_per_s"] > 0
    assert figures["ceiling_librdkafka_events_per_s"] > 0  # the other client, on the same events
    # One Python process keeps at most one core busy with its own work (the client's threads add a little).
    assert 0 < figures["worker_cores"] < 1.5
    # Redis here runs on this machine (one thread serves the commands); the broker is not the bench's own.
    assert 0 < figures["redis_cores"] < 1.2 and figures["broker_cores"] is None
    assert figures["events_per_core_s"] == pytest.approx(figures["events_per_s"] / figures["worker_cores"], rel=0.05)
    assert figures["ratio"] == pytest.approx(figures["events_per_s"] / figures["ceiling_events_per_s"], abs=1e-3)
    assert figures["latency_events"] > 0 and figures["rss_bytes"] > 10 * 2**20
    # The latency phase sends at the share of the measured rate asked for, or at the rate asked for.
    if pace[0] == "--load":
        assert figures["latency_load"] == 0.7
        assert figures["latency_rate"] == pytest.approx(0.7 * figures["events_per_s"], abs=1)
    else:
        assert figures["latency_rate"] == 900 and figures["latency_events"] == 900 * 5
        assert figures["latency_load"] == pytest.approx(900 / figures["events_per_s"], abs=1e-3)
    # What that rate asked of the worker: batches of at most the configured size, the snapshots of
    # the day before (one a customer at most, at their first event of the held day), and the
    # worker's own core busy below its all.
    assert 1 <= figures["latency_batch_events"] <= 4000
    assert 0 < figures["latency_snapshots_per_event"] <= 2000 / figures["latency_events"]
    assert 0 < figures["latency_worker_cores"] < 1.5
    assert 100 < figures["redis_bytes_per_customer"] < STATE.itemsize and figures["offnet_numbers"] > 0
    # The worker's own stage clocks over the measured span (read from its metrics), each with the rate
    # it alone would allow over the ceiling.
    stages = figures["stages"]
    assert {"fetch", "decode", "apply", "encode", "check", "write", "send", "commit"} <= set(stages)
    assert all(stages[name]["us_per_event"] > 0 and 0 < stages[name]["share"] < 1 and stages[name]["ratio"] > 0
               for name in ("fetch", "decode", "apply", "encode", "check", "write"))
    assert all(s["us_per_event"] >= 0 and 0 <= s["share"] <= 1 for s in stages.values())
    # The same clocks over the latency phase, per event it read: where a slow alert's time went.
    latency = figures["latency_stages"]
    assert {"decode", "apply", "write", "other"} <= set(latency) and latency["apply"]["us_per_event"] > 0
    assert sum(s["share"] for s in latency.values()) == pytest.approx(1.0, abs=0.01)
    if figures["latency_alerts"]:  # latency is measured on the alerts the phase brought
        assert 0 < figures["p50_latency_s"] <= figures["p99_latency_s"]
    else:
        assert figures["p50_latency_s"] is None
