import io
import json
import logging
import logging.config

from stream_app.logs import logging_config
from stream_app.privacy import Pseudonyms
from stream_app.settings import Settings


def capture(json_lines: bool) -> str:
    config = logging_config(json_lines)
    stream = io.StringIO()
    config["handlers"]["default"]["stream"] = stream
    logging.config.dictConfig(config)
    try:
        logging.getLogger("stream_app.test").info("dead letter", extra={"topic": "cdr", "offset": 7})
        logging.getLogger("faust.worker").warning("a library's %s", "record")
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    return stream.getvalue()


def test_every_record_is_one_json_object_with_its_fields() -> None:
    ours, theirs = (json.loads(line) for line in capture(json_lines=True).splitlines())
    assert (ours["event"], ours["topic"], ours["offset"], ours["level"]) == ("dead letter", "cdr", 7, "info")
    assert (theirs["event"], theirs["logger"], theirs["level"]) == ("a library's record", "faust.worker", "warning")
    assert "timestamp" in ours


def test_a_terminal_gets_readable_lines() -> None:
    text = capture(json_lines=False)
    assert "dead letter" in text and "topic=cdr" in text and not text.startswith("{")


def test_log_pseudonyms_are_keyed_stable_and_never_the_datas() -> None:
    settings = Settings(_env_file=None, log_pseudonym_key="operator-secret", pseudonym_key="the-data-secret-key")
    logs = Pseudonyms.for_logs(settings)
    first = logs("8613800000001")
    assert first == Pseudonyms.for_logs(settings)("8613800000001") != logs("8613800000002")
    assert "8613800000001" not in first and first != Pseudonyms.of(settings)("8613800000001")
    other = Settings(_env_file=None, log_pseudonym_key="another-secret")
    assert Pseudonyms.for_logs(other)("8613800000001") != first
    unkeyed = Settings(_env_file=None)  # a random key per process: still never the number
    assert Pseudonyms.for_logs(unkeyed)("8613800000001") not in ("8613800000001", first)
