"""The state store: its schema and every SQL statement of the service."""
