"""What operators see: web views, the dashboard, /metrics, alerts, masked logs."""
