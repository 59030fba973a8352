"""Build pipeline: profile -> root tree -> Ansible roles -> artifacts -> manifest."""
