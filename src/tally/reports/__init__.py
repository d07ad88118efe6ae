"""Reports for a merchant's finance and support people: CSV exports and the points liability."""
