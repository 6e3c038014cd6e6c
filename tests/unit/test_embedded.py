"""The test brokers' own set-up."""

from stream_app.tools.embedded.kafka_jvm import _cluster_id


def test_a_kraft_cluster_id_never_reads_as_an_option() -> None:
    """One random id in 64 starts with '-', and kafka-storage then refused to format (seen in CI)."""
    ids = [_cluster_id() for _ in range(5000)]
    assert not any(i.startswith("-") for i in ids) and len(set(ids)) == 5000 and {len(i) for i in ids} == {22}
