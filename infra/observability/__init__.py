"""Monitoring as data: recording and alert rules, KEDA trigger queries and Grafana dashboards (pure, no Pulumi)."""
