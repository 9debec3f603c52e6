"""What goes on the wire: the round and one module per check, with the wire formats they speak."""
