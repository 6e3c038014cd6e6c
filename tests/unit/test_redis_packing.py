"""Commands packed in C (`connect.redis.pack_command`) are the bytes redis-py packs in Python."""

from __future__ import annotations

from enum import IntEnum

import pytest
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from stream_app.connect.redis import connect_redis, pack_command

COMMANDS = [
    ("MGET", *(f"churnwatch:state:{i}" for i in range(50))),
    ("SET", "cw:é", b"\x00\xff" * 5000, "PX", 86_400_000),  # past redis-py's 6,000-byte chunks
    ("EVALSHA", "ab12", 2, "k1", b"k2", -1, 2.5, b""),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", b"maxmemory"),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_same_bytes_as_redis_py(args: tuple) -> None:
    assert pack_command(*args) == [b"".join(Connection().pack_command(*args))]


@pytest.mark.parametrize("bad", [None, True, {"a": 1}])
def test_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        pack_command("SET", "k", bad)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://127.0.0.1:6379/0", "unix:///tmp/r.sock"])
def test_every_connection_of_the_worker_packs_in_c(url: str) -> None:
    made = connect_redis(url).connection_pool.make_connection()
    assert made.pack_command("GET", "k") == pack_command("GET", "k")
    assert made.pack_command.__qualname__ != Connection.pack_command.__qualname__


class _Shard(IntEnum):
    FIRST = 1


@pytest.mark.parametrize("args", [("SET", "k", bytearray(b"ab")), ("HGET", "h", _Shard.FIRST), *COMMANDS])
def test_a_connection_sends_what_redis_py_sends_whatever_hiredis_takes(args: tuple) -> None:
    """What hiredis refuses but redis-py packs (a bytearray, an int subclass) goes as redis-py packs it."""
    made = connect_redis("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    assert b"".join(made.pack_command(*args)) == b"".join(Connection().pack_command(*args))


def test_a_connection_in_another_encoding_sends_its_bytes() -> None:
    made = connect_redis("redis://127.0.0.1:6379/0?encoding=latin-1").connection_pool.make_connection()
    assert b"".join(made.pack_command("SET", "k", "é")) == b"".join(Connection(encoding="latin-1").pack_command(
        "SET", "k", "é"))
    assert b"\xe9" in b"".join(made.pack_command("SET", "k", "é"))


@pytest.mark.parametrize("bad", [None, True, {"a": 1}])
def test_a_connection_refuses_as_redis_py_does(bad: object) -> None:
    made = connect_redis("redis://127.0.0.1:6379/0").connection_pool.make_connection()
    with pytest.raises(DataError) as ours:
        made.pack_command("SET", "k", bad)
    with pytest.raises(DataError) as theirs:
        Connection().pack_command("SET", "k", bad)
    assert str(ours.value) == str(theirs.value)


def test_cluster_nodes_pack_in_c() -> None:
    client = connect_redis("redis://127.0.0.1:7000/0", cluster=True)
    nodes = list(client.nodes_manager.startup_nodes.values())
    found = client.nodes_manager.connection_kwargs["connection_class"]
    assert nodes and all(node.connection_class is found for node in nodes)
    assert found(host="h").pack_command("GET", "k") == pack_command("GET", "k")
    assert found.pack_command is not Connection.pack_command
