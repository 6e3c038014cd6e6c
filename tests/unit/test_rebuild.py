"""Which partitions a worker rebuilds from Kafka when it is given them: those whose committed
offset is ahead of what Redis says it applied."""

from aiokafka import TopicPartition

from stream_app.worker.consumer import Rebuild, rebuilds

CDR0, CDR1, BILL0, NEW = (TopicPartition("cdr", 0), TopicPartition("cdr", 1), TopicPartition("billing", 0),
                          TopicPartition("cdr", 2))


def test_a_partition_redis_kept_up_with_is_left_alone() -> None:
    committed = {CDR0: 100, CDR1: 50, NEW: None}
    applied = {("cdr", 0): 99, ("cdr", 1): 60}  # applied ahead of the commit: a crash before committing
    assert rebuilds([CDR0, CDR1, NEW], committed, applied) == {}


def test_redis_that_lost_everything_rebuilds_from_the_start_and_one_that_lost_its_last_writes_from_there() -> None:
    committed = {CDR0: 100, CDR1: 50, BILL0: 7}
    applied = {("cdr", 1): 20}  # cdr-0 and billing-0 gone, cdr-1 behind by 29 offsets
    assert rebuilds([CDR0, CDR1, BILL0], committed, applied) == {
        CDR0: Rebuild(None, 100), CDR1: Rebuild(21, 50), BILL0: Rebuild(None, 7)}
