"""Data stage: the generated fact world, the toy model trained on it, CounterFact/zsRE records
and the known-fact filter."""
