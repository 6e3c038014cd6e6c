import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from stream_app.contracts.events import CONTRACTS, decode_billing, decode_cdr, decode_profile, json_schema
from stream_app.errors import InvalidEvent
from stream_app.offline.simulator import SimConfig, Simulator
from tests.factories import billing, cdr

SCHEMAS = Path(__file__).resolve().parents[2] / "stream_app" / "contracts" / "schemas"
TS = "2026-03-01T10:00:00+08:00"


@pytest.mark.parametrize(("raw", "reason", "field"), [
    (b"{not json", "not_json", None),
    (cdr("8613800000001", TS, duration_s=-5), "invalid_field", "duration_s"),
    (cdr("8613800000001", TS, duration_s="60"), "invalid_field", "duration_s"),
    (b'{"event_id":"e","ts":"2026-03-01T10:00:00+08:00","kind":"voice"}', "invalid_field", "customer_id"),
    (cdr("8613800000001", "2026-03-01T10:00:00"), "invalid_field", "ts"),
    (cdr("8613800000001", TS, kind="fax"), "invalid_field", "kind"),
    (cdr("8613800000001", TS, colour="red"), "invalid_field", "colour"),
])
def test_bad_cdr_names_the_field(raw: bytes, reason: str, field: str | None) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_cdr(raw)
    assert err.value.reason == reason
    assert err.value.field == field


def test_exit_needs_a_known_reason_code() -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_billing(billing("8613800000001", TS, kind="port_out"))
    assert err.value.field == "reason_code"
    with pytest.raises(InvalidEvent, match="999"):
        decode_billing(billing("8613800000001", TS, kind="port_out", reason_code=999))
    assert decode_billing(billing("8613800000001", TS, kind="port_out", reason_code=205)).reason_code == 205


def _words(schema: object) -> object:
    """The schema with each text's whitespace collapsed: msgspec releases differ in how they
    dedent a docstring, which changes no contract."""
    if isinstance(schema, dict):
        return {k: _words(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_words(v) for v in schema]
    return " ".join(schema.split()) if isinstance(schema, str) else schema


def test_schema_files_match_the_contracts() -> None:
    for name, kind in CONTRACTS.items():
        on_disk = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        assert _words(on_disk) == _words(json.loads(json.dumps(json_schema(kind)))), f"{name}: run `churnwatch schemas`"


def test_simulated_traffic_validates_against_the_schemas() -> None:
    validators = {t: jsonschema.Draft202012Validator(json.loads((SCHEMAS / f"{f}.schema.json").read_text()))
                  for t, f in (("cdr", "cdr"), ("billing", "billing"), ("customers", "customer_profile"))}
    decoders = {"cdr": decode_cdr, "billing": decode_billing, "customers": decode_profile}
    sim = Simulator(SimConfig(customers=30, days=40, monthly_churn=0.2))
    seen = set()
    for rec in sim.records():
        validators[rec.topic].validate(msgspec.json.decode(rec.value))
        decoders[rec.topic](rec.value)
        seen.add(rec.topic)
    assert seen == {"cdr", "billing", "customers"}


def test_schema_rejects_what_the_decoder_rejects() -> None:
    schema = json.loads((SCHEMAS / "cdr.schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(msgspec.json.decode(cdr("8613800000001", TS, duration_s=-1)), schema)


@pytest.mark.parametrize(("customer", "ok"), [
    ("8613800000001", True), ("p_Ab-9_xYz", True), ("A" * 64, True), ("12345", True),
    ("1234", False), ("A" * 65, False), ("86138{00}001", False), ("8613800000 01", False),
    ("861380000000\u0661", False),  # an Arabic-Indic digit: a digit to `str.isalnum`, not to the pattern
    ("861380000000\u00e9", False), ("", False),
])
def test_customer_ids_are_checked_against_the_pattern(customer: str, ok: bool) -> None:
    raw = cdr(customer, TS)
    profile = msgspec.json.encode({"event_id": "p", "customer_id": "8613800000001", "ts": TS,
                                   "activation_date": "2025-01-01", "plan": "basic", "region": "north",
                                   "previous_customer_id": customer})
    if ok:
        assert decode_cdr(raw).customer_id == customer
        assert decode_profile(profile).previous_customer_id == customer
        return
    for decode, field in ((decode_cdr, "customer_id"), (decode_profile, "previous_customer_id")):
        with pytest.raises(InvalidEvent) as err:
            decode(raw if decode is decode_cdr else profile)
        assert (err.value.reason, err.value.field) == ("invalid_field", field)
