"""USB flashing: target discovery and refusal policy, parallel writing, read-back verification."""

# The block map moved to provisioner.formats.bmap. This alias keeps `from provisioner.flash
# import bmap` working only for tests/integration/station/{test_install_loop,
# test_usb_and_secure_boot}.py, which are being moved on another branch; remove it once they
# import provisioner.formats.bmap.
from provisioner.formats import bmap as bmap
