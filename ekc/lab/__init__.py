"""The built-in lab: a test and demo harness, not part of what ekc installs on a region's servers.

Real Debian forky servers booted with systemd-nspawn on a closed bridge, SIPp as the carrier and the
operators' phones. Only the CLI's ``lab`` commands and the tests import this package; no product module does
(``make lint`` checks it).
"""
