"""Tools around the service: the demo, the benchmarks, `inspect`, and the embedded broker and
Redis used when no servers are configured."""
