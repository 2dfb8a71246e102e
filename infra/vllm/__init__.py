"""Everything about the pinned vLLM in one pure place (no Pulumi): the `vllm serve` command line, its flag
table, the API-key environment, probe timings from the plan, and the metric names of that version."""
