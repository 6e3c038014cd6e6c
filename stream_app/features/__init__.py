"""What the windows say about a customer: derived features, and the segment baselines that
measure a change against what is normal this month."""
