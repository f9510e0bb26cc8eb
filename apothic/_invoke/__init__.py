"""What a call does: functions, jobs, maps and event streams."""
