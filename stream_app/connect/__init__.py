"""Clients of the outside world: Kafka producers, consumers and admin (topics), and a reader
of a whole topic for the commands that list what is on one."""
