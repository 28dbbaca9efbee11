"""Model editing: ROME, MEMIT and constrained finetuning under the five editing problems."""
