"""What lives under artifacts/: run folders (declared, read, written, grouped, tabled) and the job slot."""
