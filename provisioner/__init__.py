"""deelit: the refurbishment and provisioning image builder of the DEEL IT network."""

__version__ = "0.1.0"
