"""Models: base-model resolution (aliases, local folders, from-scratch configs) and artifacts."""
