"""What operators see and steer: the control API, metrics and logs."""
