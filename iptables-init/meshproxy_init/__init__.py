"""meshproxy-init: redirect a pod's TCP traffic through the meshproxy sidecar with iptables.

The package is Python standard library only, and only the modules Debian's
python3-minimal ships (no dataclasses, shutil or shlex), so it runs in a slim
init container. The steps are separate modules: settings (config), the rule
list as data (rules), turning it into iptables-restore text against the
current table (restore), choosing iptables-nft or iptables-legacy (backend),
and the only code that runs commands (system).
"""

__version__ = "0.1.0"
