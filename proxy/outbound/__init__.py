"""The outbound side: traffic from the local app to the rest of the world."""
