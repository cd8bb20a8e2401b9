"""The November-2024 Mixpeek API (tasks, assets, features): its client and wire models."""
