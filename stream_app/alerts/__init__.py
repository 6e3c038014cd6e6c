"""From a fired rule to a phone call: alerts with reasons and value at stake, each sent once,
the daily call plan, campaign figures and the call-queue page."""
