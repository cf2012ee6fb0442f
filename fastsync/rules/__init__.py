"""Pure rules: folder names across namespaces, message identity and plans, rate and connection caps, retries."""
