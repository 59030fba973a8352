"""Runs on the laptop: inventory, health, wipe. Imports nothing from build, netboot, registry."""
