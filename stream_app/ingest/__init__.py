"""The edge of the stream: a raw record is checked, decoded and pseudonymised here, or sent to
dead letter with the reason and the field."""

from stream_app.ingest.admission import CEILING, Bounds, Edge, Erasure, Event
from stream_app.ingest.deadletters import DEAD_LETTER_PREFIX, dead_letter

__all__ = ["Bounds", "CEILING", "dead_letter", "DEAD_LETTER_PREFIX", "Edge", "Erasure", "Event"]
