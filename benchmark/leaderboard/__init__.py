"""The leaderboard: checked records aggregated into LEADERBOARD.md, its tables and figures."""
