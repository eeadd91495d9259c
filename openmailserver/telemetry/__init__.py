"""What the daemon tells its operators: JSON logs and Prometheus metrics."""
