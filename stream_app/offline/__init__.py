"""Offline runs of the same pipeline: replays of recorded or monthly data, the evaluations
against a batch reference, and the traffic simulator."""
