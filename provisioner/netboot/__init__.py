"""PXE station: proxy-DHCP + TFTP (dnsmasq), iPXE scripts, HTTP artifacts."""
