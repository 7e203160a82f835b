"""Pipeline step 2, render: every host's files, packages, services and triggers; the build directory; the audit
report; the offline plan between two renders."""
