"""The flight recorder: the recent steps of each client's and each person's attempts to connect (issue 16)."""
