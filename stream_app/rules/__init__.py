"""The managers' alert rules: the YAML pack and its checks, vectorised evaluation, hot reload,
and promtool-style test cases."""
