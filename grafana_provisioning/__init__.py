"""Grafana provisioning generated from what the flows store (issue 6); see docs/grafana.md."""
