"""The managers' reports: counters the workers keep per batch, the monthly churn and cohort
reports read from them, and their charts."""
