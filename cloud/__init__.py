"""pledgewatch cloud package (filled by later issues)."""
