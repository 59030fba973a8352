"""deelit's own file formats, one module each: what a build hands every later stage.

Ground floor: these modules import nothing from the rest of deelit but `provisioner.errors`,
so the agent (which ships inside the image) can read them too.
"""
