"""The edge of the stream: a raw record is checked, decoded and pseudonymised here, or sent to
dead letter with the reason and the field."""
