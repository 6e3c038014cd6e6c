"""The shared vocabulary every stage speaks: the wire records and their JSON Schemas, the Redis
key layout, and the operator's calendar (how days and months are counted in its time zone)."""
