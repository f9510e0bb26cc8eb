"""What the decorator accepts: option types (resources) and their checks (validation)."""
