"""function_calling environment (being written)."""
