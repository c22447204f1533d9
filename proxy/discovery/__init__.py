"""The embedded destination client: logical names -> streams of endpoint-set updates.

Start with ``proxy.discovery.resolver.build_resolver(settings.discovery, metrics)``; see resolver.py for
the interface and file.py, dns.py, k8s.py for the sources. Nothing is imported here: the viz commands
read only the model and the file format, and should not load the resolver's dependencies (2 MiB).
"""
