"""pledgewatch gateway package (filled by later issues)."""
