"""What a backbone is and where its files are: specs, the registry, exported records. No torch."""
