"""Background training jobs the dashboard starts, and the standby process that waits for them."""
