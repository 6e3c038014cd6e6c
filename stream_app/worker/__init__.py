"""The streaming worker: the consumer that owns partitions, the batch pipeline that wires the
stages together, the faust app, and the health and metrics endpoints."""
