"""Source and destination connectors, registered by type name."""
