"""Pipeline step 3, bundle: the offline package set (signed APT repository, wheels, SBOM, lock), built on the
connected side and served to the nodes during an apply."""
