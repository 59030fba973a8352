"""Runs on the laptop: inventory, health, wipe, install, report. Imports nothing from build or netboot."""
