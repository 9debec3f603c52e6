"""What the observations mean: the vantage's own network, and the classifier's rule table."""
