"""Where stored bytes go: open, write, then commit or abort. Local folders today; S3 next."""
