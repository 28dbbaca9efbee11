"""Tracing stage: Causal Tracing and representation zeroing (``trace``), their batched passes
(``batching``, ``passes``), the tidy tables (``tables``) and the heatmaps (``plots``)."""
