"""Per-customer rolling usage windows: the packed record layout, applying events to it, and the
Redis store that writes a batch's states exactly once."""
