# Declarations for pbwire.py: compiled because tap events are encoded per
# tapped request; nothing here is cimported.
