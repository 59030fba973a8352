"""USB flashing: block maps, target discovery and safety, parallel verified writing."""
