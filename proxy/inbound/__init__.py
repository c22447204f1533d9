"""The inbound side: traffic from the rest of the world to the local app."""
