"""Warnings to the customers' account managers: who they are (directory), what they are told
(messages), how it reaches them (channels, delivery) and the service that follows the alerts
topic (notifier)."""
