"""Schedules: the cron dialect and the Temporal Schedules made at deploy."""
