"""The sync engine: one task from poll to points, the daemon loop that schedules it."""
