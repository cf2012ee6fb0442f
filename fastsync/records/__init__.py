"""Records that every layer shares: errors by scope, the small frozen records that cross processes, results, events."""
