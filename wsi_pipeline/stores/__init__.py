"""On-disk formats shared between stages; stages talk to each other only through these."""
