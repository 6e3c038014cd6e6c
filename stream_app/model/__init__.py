"""The online churn model: inputs, learner and scorer, the snapshots and labels it learns from,
the one trainer, the registry that publishes versions, and signed pickles."""
