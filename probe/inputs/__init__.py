"""What a round is made from: the config, the catalogues, the address space, the plan."""
