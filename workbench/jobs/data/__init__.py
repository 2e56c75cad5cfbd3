"""Dataset sources. Nothing here downloads at test time; generated and package-shipped data only."""
